//! The patent's "turn off destaging", in modern SCSI: the Caching mode page
//! (08h) set for the duration of a transfer and restored afterwards.
//!
//! [`CacheSetting::apply`] reads the page's current and changeable values,
//! changes what the target lets change (WCE for write-back, so transfer
//! segments complete in the array's cache; WRITE RETENTION PRIORITY where
//! changeable), and remembers the page it found. [`CacheSetting::restore`],
//! or dropping the setting, writes that page back. What could not be set is
//! *reported* ([`CacheReport`]), never an error: measured, tgt lets only
//! WCE change and LIO accepts only the unchanged page.
//!
//! Not here: deciding *when* to apply it (the CLI), or restoring it after a
//! signal (the CLI keeps the setting reachable from its signal handler).

use std::fmt;

use crate::commands::{is_unsupported, Commands};
use crate::device::{lock_transport, SharedTransport};
use crate::error::Result;
use crate::mode::{apply_changeable, CachingPage, PageControl};

/// What to ask of the Caching page. `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheRequest {
    /// WCE: write cache enable (write-back).
    pub wce: Option<bool>,
    /// WRITE RETENTION PRIORITY (0..=15; 15 = keep written data longest).
    pub write_retention_priority: Option<u8>,
}

impl CacheRequest {
    /// The patent's "destaging off": write-back caching, and written data
    /// retained in cache longer than other data.
    pub fn destage_off() -> Self {
        Self {
            wce: Some(true),
            write_retention_priority: Some(15),
        }
    }

    fn desired(&self, current: &CachingPage) -> CachingPage {
        let mut p = *current;
        if let Some(wce) = self.wce {
            p.wce = wce;
        }
        if let Some(w) = self.write_retention_priority {
            p.write_retention_priority = w & 0x0f;
        }
        p
    }
}

/// What [`CacheSetting::apply`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    /// The page before (`None`: the target has no Caching page).
    pub before: Option<CachingPage>,
    /// The page after.
    pub after: Option<CachingPage>,
    /// Fields that differ from what was asked and could not be changed
    /// (not changeable, or the target refused the MODE SELECT).
    pub refused: Vec<String>,
}

impl fmt::Display for CacheReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.before, &self.after) {
            (None, _) | (_, None) => f.write_str("the target has no Caching mode page; left as is"),
            (Some(b), Some(a)) => {
                write!(
                    f,
                    "WCE {} -> {}, write retention priority {} -> {}",
                    u8::from(b.wce),
                    u8::from(a.wce),
                    b.write_retention_priority,
                    a.write_retention_priority
                )?;
                if !self.refused.is_empty() {
                    write!(f, "; not changeable here: {}", self.refused.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// A Caching page setting in force; restores the saved page when restored
/// explicitly or dropped.
#[derive(Debug)]
pub struct CacheSetting {
    transport: SharedTransport,
    saved: Option<CachingPage>,
    changed: bool,
}

/// Reads the current and changeable Caching page.
pub fn read_caching(t: &SharedTransport) -> Result<Option<(CachingPage, CachingPage)>> {
    let mut t = lock_transport(t);
    let current = match t.caching_page(PageControl::Current) {
        Ok(p) => p,
        Err(e) if is_unsupported(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mask = match t.caching_page(PageControl::Changeable) {
        Ok(p) => p,
        Err(e) if is_unsupported(&e) => CachingPage::default(),
        Err(e) => return Err(e),
    };
    Ok(Some((current, mask)))
}

impl CacheSetting {
    /// Applies `req` as far as the target allows. Fails only when the
    /// device cannot be talked to at all; a page that cannot be changed is
    /// reported in the [`CacheReport`].
    pub fn apply(transport: SharedTransport, req: &CacheRequest) -> Result<(Self, CacheReport)> {
        let Some((current, mask)) = read_caching(&transport)? else {
            let report = CacheReport {
                before: None,
                after: None,
                refused: vec!["Caching mode page".into()],
            };
            return Ok((
                Self {
                    transport,
                    saved: None,
                    changed: false,
                },
                report,
            ));
        };
        let desired = req.desired(&current);
        let (page, refused) = apply_changeable(&current, &desired, &mask);
        let mut refused: Vec<String> = refused.into_iter().map(str::to_owned).collect();
        // apply_changeable names the generic fields; name the two we ask for.
        if desired.wce != current.wce && page.wce == current.wce {
            refused.push("WCE".into());
        }
        if desired.write_retention_priority != current.write_retention_priority
            && page.write_retention_priority == current.write_retention_priority
        {
            refused.push("WRITE RETENTION PRIORITY".into());
        }
        refused.dedup();
        let mut after = current;
        let mut changed = false;
        if page != current {
            let mut t = lock_transport(&transport);
            match t.set_caching_page(&page) {
                Ok(()) => {
                    // From here on the setting must be restorable, even if
                    // reading the page back fails.
                    changed = true;
                    after = t.caching_page(PageControl::Current).unwrap_or(page);
                }
                Err(e) if e.sense().is_some() => {
                    refused.push(format!("MODE SELECT refused ({e})"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((
            Self {
                transport,
                saved: Some(current),
                changed,
            },
            CacheReport {
                before: Some(current),
                after: Some(after),
                refused,
            },
        ))
    }

    /// True while a changed page is in force (the restore has work to do).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The page found before [`CacheSetting::apply`] changed it.
    pub fn saved(&self) -> Option<&CachingPage> {
        self.saved.as_ref()
    }

    /// Writes the saved page back. Another host's short RESERVE(6) (a
    /// RESERVATION CONFLICT) and unit attentions are retried for up to 30
    /// seconds; only a successful MODE SELECT ends the setting, so a failed
    /// restore can be tried again (the drop does).
    pub fn restore(&mut self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let Some(page) = self.saved else {
            self.changed = false;
            return Ok(());
        };
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            let r = lock_transport(&self.transport).set_caching_page(&page);
            match r {
                Ok(()) => {
                    self.changed = false;
                    return Ok(());
                }
                Err(e)
                    if (e.is_reservation_conflict() || e.is_unit_attention())
                        && start.elapsed() < std::time::Duration::from_secs(30) =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for CacheSetting {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("fts-scsi: restoring the Caching mode page failed: {e}");
        }
    }
}
