/*
 * iscsi-rw: libiscsi's own sequential read or write rate at a given queue
 * depth, for `cargo xtask bench` (iscsi-perf, from libiscsi-bin, only
 * reads). One session, DEPTH requests of REQ bytes in flight, TOTAL bytes
 * from byte OFFSET of the LUN.
 *
 *   iscsi-rw URL read|write DEPTH REQ TOTAL OFFSET INITIATOR
 *
 * Prints one line: "bytes=N secs=S ops=N p50_us=U" (the median latency of
 * one request, submission to completion). Exits 1 on any error.
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

struct run {
    struct iscsi_context *iscsi;
    int lun;
    int write;
    uint32_t block;
    uint32_t req;
    uint64_t next; /* next byte to submit */
    uint64_t end;
    int in_flight;
    int failed;
    uint64_t done_ops;
    double *lat;
    uint64_t nlat;
};

struct slot {
    struct run *run;
    unsigned char *buf;
    struct scsi_iovec iov;
    double started;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void submit(struct slot *s);

static void done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data)
{
    struct slot *s = private_data;
    struct run *r = s->run;
    struct scsi_task *task = command_data;
    (void)iscsi;
    r->in_flight--;
    if (status != SCSI_STATUS_GOOD) {
        fprintf(stderr, "iscsi-rw: %s failed: %s\n", r->write ? "WRITE(16)" : "READ(16)",
                iscsi_get_error(r->iscsi));
        r->failed = 1;
    } else {
        if (r->done_ops < r->nlat)
            r->lat[r->done_ops] = now() - s->started;
        r->done_ops++;
    }
    if (task)
        scsi_free_scsi_task(task);
    if (!r->failed)
        submit(s);
}

static void submit(struct slot *s)
{
    struct run *r = s->run;
    struct scsi_task *task;
    uint64_t lba;
    if (r->next >= r->end)
        return;
    lba = r->next / r->block;
    r->next += r->req;
    s->started = now();
    if (r->write) {
        task = iscsi_write16_task(r->iscsi, r->lun, lba, s->buf, r->req, (int)r->block, 0, 0, 0, 0, 0,
                                  done, s);
    } else {
        s->iov.iov_base = s->buf;
        s->iov.iov_len = r->req;
        task = iscsi_read16_iov_task(r->iscsi, r->lun, lba, r->req, (int)r->block, 0, 0, 0, 0, 0,
                                     done, s, &s->iov, 1);
    }
    if (task == NULL) {
        fprintf(stderr, "iscsi-rw: cannot queue a request: %s\n", iscsi_get_error(r->iscsi));
        r->failed = 1;
        return;
    }
    r->in_flight++;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct run r;
    struct iscsi_url *url;
    struct scsi_task *task;
    struct scsi_readcapacity16 *rc16;
    struct slot *slots;
    int depth, i;
    double t0, secs;

    if (argc != 8) {
        fprintf(stderr, "usage: iscsi-rw URL read|write DEPTH REQ TOTAL OFFSET INITIATOR\n");
        return 2;
    }
    memset(&r, 0, sizeof(r));
    r.write = strcmp(argv[2], "write") == 0;
    depth = atoi(argv[3]);
    r.req = (uint32_t)strtoul(argv[4], NULL, 0);
    r.next = strtoull(argv[6], NULL, 0);
    r.end = r.next + strtoull(argv[5], NULL, 0);
    if (depth < 1 || r.req == 0) {
        fprintf(stderr, "iscsi-rw: bad depth or request size\n");
        return 2;
    }
    r.iscsi = iscsi_create_context(argv[7]);
    if (r.iscsi == NULL) {
        fprintf(stderr, "iscsi-rw: no context\n");
        return 1;
    }
    url = iscsi_parse_full_url(r.iscsi, argv[1]);
    if (url == NULL) {
        fprintf(stderr, "iscsi-rw: bad URL %s: %s\n", argv[1], iscsi_get_error(r.iscsi));
        return 1;
    }
    iscsi_set_targetname(r.iscsi, url->target);
    iscsi_set_session_type(r.iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(r.iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (iscsi_full_connect_sync(r.iscsi, url->portal, url->lun) != 0) {
        fprintf(stderr, "iscsi-rw: login to %s failed: %s\n", argv[1], iscsi_get_error(r.iscsi));
        return 1;
    }
    r.lun = url->lun;
    iscsi_destroy_url(url);
    task = iscsi_readcapacity16_sync(r.iscsi, r.lun);
    if (task == NULL || task->status != SCSI_STATUS_GOOD) {
        fprintf(stderr, "iscsi-rw: READ CAPACITY(16) failed: %s\n", iscsi_get_error(r.iscsi));
        return 1;
    }
    rc16 = scsi_datain_unmarshall(task);
    if (rc16 == NULL || rc16->block_length == 0) {
        fprintf(stderr, "iscsi-rw: cannot decode READ CAPACITY(16)\n");
        return 1;
    }
    r.block = rc16->block_length;
    scsi_free_scsi_task(task);
    if (r.req % r.block != 0 || r.next % r.block != 0) {
        fprintf(stderr, "iscsi-rw: request size and offset must be multiples of %u\n", r.block);
        return 2;
    }
    r.nlat = (r.end - r.next) / r.req + 1;
    r.lat = calloc(r.nlat, sizeof(double));
    slots = calloc((size_t)depth, sizeof(struct slot));
    if (r.lat == NULL || slots == NULL)
        return 1;
    for (i = 0; i < depth; i++) {
        slots[i].run = &r;
        if (posix_memalign((void **)&slots[i].buf, 4096, r.req) != 0)
            return 1;
        /* Data that does not compress: an LCG per slot. */
        for (uint32_t j = 0; j < r.req; j++)
            slots[i].buf[j] = (unsigned char)((j * 2654435761u + (unsigned)i * 40503u) >> 13);
    }
    t0 = now();
    for (i = 0; i < depth; i++)
        submit(&slots[i]);
    while (r.in_flight > 0) {
        struct pollfd pfd;
        pfd.fd = iscsi_get_fd(r.iscsi);
        pfd.events = (short)iscsi_which_events(r.iscsi);
        if (poll(&pfd, 1, 10000) < 0) {
            perror("iscsi-rw: poll");
            return 1;
        }
        if (iscsi_service(r.iscsi, pfd.revents) < 0) {
            fprintf(stderr, "iscsi-rw: iscsi_service: %s\n", iscsi_get_error(r.iscsi));
            return 1;
        }
    }
    secs = now() - t0;
    if (r.failed)
        return 1;
    qsort(r.lat, r.done_ops < r.nlat ? r.done_ops : r.nlat, sizeof(double), cmp);
    printf("bytes=%llu secs=%.6f ops=%llu p50_us=%.1f\n",
           (unsigned long long)(r.done_ops * r.req), secs, (unsigned long long)r.done_ops,
           r.done_ops ? r.lat[(r.done_ops < r.nlat ? r.done_ops : r.nlat) / 2] * 1e6 : 0.0);
    iscsi_logout_sync(r.iscsi);
    iscsi_destroy_context(r.iscsi);
    return 0;
}
