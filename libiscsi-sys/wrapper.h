/* Input to bindgen for libiscsi-sys (see `cargo xtask bindgen`).
 *
 * iscsi.h declares the context and command API; scsi-lowlevel.h defines
 * struct scsi_task (status, residual, sense/data-in buffer), which iscsi.h
 * only forward-declares. */
#include <stdint.h>
#include <stddef.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
