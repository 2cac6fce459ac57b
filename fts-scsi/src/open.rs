//! Opening a transport from a device location given on the command line.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::Transport;

/// What an fts host needs to open a SCSI device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiOptions {
    /// The iSCSI initiator name (IQN) to log in with; the ISID is derived
    /// from it ([`crate::initiator::isid_for`]). Ignored for SG_IO.
    pub initiator: String,
    /// Timeout of each command (and of the iSCSI login).
    pub timeout: Duration,
}

/// True for locations that name a SCSI device rather than a file or a
/// plain block device: an `iscsi://` URL, a SCSI generic node `/dev/sgN`,
/// or a SCSI disk `/dev/sdX` (driven through SG_IO so
/// that reservations and RESERVATION CONFLICT are seen as such).
pub fn is_scsi_location(location: &str) -> bool {
    location.starts_with("iscsi://")
        || location.starts_with("/dev/sg")
        || location.starts_with("/dev/sd")
        || location.starts_with("/dev/disk/by-id/scsi-")
        || location.starts_with("/dev/disk/by-id/wwn-")
}

/// Opens a transport to `location` (see [`is_scsi_location`]).
pub fn open_transport(location: &str, opts: &ScsiOptions) -> Result<Box<dyn Transport>> {
    if location.starts_with("iscsi://") {
        #[cfg(feature = "iscsi")]
        {
            crate::initiator::validate_iqn(&opts.initiator)?;
            return Ok(Box::new(crate::iscsi::IscsiTransport::connect(
                location,
                &opts.initiator,
                opts.timeout,
            )?));
        }
        #[cfg(not(feature = "iscsi"))]
        {
            let _ = opts;
            return Err(Error::Connect {
                target: location.to_owned(),
                detail: "this fts was built without the `iscsi` feature (libiscsi transport)"
                    .into(),
            });
        }
    }
    if is_scsi_location(location) {
        return Ok(Box::new(crate::sg::SgTransport::open(location)?));
    }
    Err(Error::Connect {
        target: location.to_owned(),
        detail: "not a SCSI device location (expected iscsi://portal[:port]/target-iqn/lun, \
                 /dev/sgN or /dev/sdX)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        for l in ["iscsi://127.0.0.1/iqn.x:y/1", "/dev/sg3", "/dev/sdb"] {
            assert!(is_scsi_location(l), "{l}");
        }
        for l in [
            "/tmp/disk.img",
            "/dev/loop0",
            "/dev/nvme0n1",
            "disk.img",
            "nbd://x",
        ] {
            assert!(!is_scsi_location(l), "{l}");
        }
    }

    #[test]
    fn a_file_is_refused_with_the_reason() {
        let opts = ScsiOptions {
            initiator: "iqn.2026-11.invalid.fts:test".into(),
            timeout: Duration::from_secs(1),
        };
        let err = open_transport("/tmp/disk.img", &opts).unwrap_err();
        assert!(
            err.to_string().contains("not a SCSI device location"),
            "{err}"
        );
    }
}
