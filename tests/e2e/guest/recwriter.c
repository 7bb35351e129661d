// The e2e guest's workload: numbered, checksummed records written to the guest's disk with
// O_DIRECT|O_DSYNC, each printed on the console once the write returned (= acknowledged by the
// storage stack: imagesync replies only when both replicas hold it).
//
// Usage (inside the guest, started by /init): recwriter DEVICE
// Kernel command line parameters it reads from /proc/cmdline:
//   vmha.rate=N    records per second (default 20; 0 = as fast as the disk takes them)
//   vmha.slots=N   records in the ring at the start of DEVICE (default 1024, 4 KiB each)
//
// Record n lives in slot n % slots, at byte (n % slots) * 4096:
//   0   "VMHAREC1"         8 bytes
//   8   n                  u64 little endian, counts from 1
//   16  boot nonce         u64, one per boot (which boot wrote it)
//   24  guest clock        u64 nanoseconds, CLOCK_MONOTONIC in the guest
//   32  pattern            byte i = (n * 131 + i) & 0xff, up to byte 4091
//   4092 CRC-32 (IEEE)     of bytes 0..4091
// At boot it scans the ring for the highest valid n and goes on from n + 1, so the numbering
// continues across restarts and failovers. Console lines (tests/e2e/records.py parses them):
//   VMHA-BOOT <nonce> next <n>      after the scan
//   VMHA-ACK <n>                    record n is written (the write returned)
//   VMHA-WRITE-ERROR <n> <errno>    the write failed; it is tried again
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { record_size = 4096, crc_offset = 4092 };

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_ieee(const unsigned char* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put64(unsigned char* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long cmdline_param(const char* name, long fallback) {
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0) return fallback;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return fallback;
    buf[n] = '\0';
    size_t len = strlen(name);
    for (char* p = buf; (p = strstr(p, name)) != NULL; p += len) {
        if ((p == buf || p[-1] == ' ') && p[len] == '=') return strtol(p + len + 1, NULL, 10);
    }
    return fallback;
}

static void say(const char* fmt, unsigned long long a, unsigned long long b) {
    char line[128];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (n > 0) (void)!write(STDOUT_FILENO, line, (size_t)n);
}

static int valid(const unsigned char* r, uint64_t* seq) {
    if (memcmp(r, "VMHAREC1", 8) != 0) return 0;
    uint32_t want = (uint32_t)r[crc_offset] | (uint32_t)r[crc_offset + 1] << 8 |
                    (uint32_t)r[crc_offset + 2] << 16 | (uint32_t)r[crc_offset + 3] << 24;
    if (crc32_ieee(r, crc_offset) != want) return 0;
    *seq = get64(r + 8);
    return 1;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: recwriter DEVICE\n");
        return 64;
    }
    crc_init();
    const long rate = cmdline_param("vmha.rate", 20);
    const long slots = cmdline_param("vmha.slots", 1024);
    int fd = open(argv[1], O_RDWR | O_DIRECT | O_DSYNC);
    if (fd < 0) {
        say("VMHA-OPEN-ERROR %llu %llu\n", 0, (unsigned long long)errno);
        return 1;
    }
    unsigned char* buf = NULL;
    if (posix_memalign((void**)&buf, record_size, record_size) != 0) return 1;

    // Where to go on: after the highest valid record in the ring.
    uint64_t highest = 0;
    for (long slot = 0; slot < slots; ++slot) {
        uint64_t seq = 0;
        if (pread(fd, buf, record_size, (off_t)slot * record_size) == record_size && valid(buf, &seq) &&
            seq > highest) {
            highest = seq;
        }
    }
    uint64_t nonce = now_ns();
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd >= 0) {
        (void)!read(rnd, &nonce, sizeof nonce);
        close(rnd);
    }
    say("VMHA-BOOT %llu next %llu\n", (unsigned long long)nonce, (unsigned long long)(highest + 1));

    const uint64_t period = rate > 0 ? 1000000000u / (uint64_t)rate : 0;
    uint64_t next_at = now_ns();
    for (uint64_t seq = highest + 1;;) {
        unsigned char* r = buf;
        memcpy(r, "VMHAREC1", 8);
        put64(r + 8, seq);
        put64(r + 16, nonce);
        put64(r + 24, now_ns());
        for (int i = 32; i < crc_offset; ++i) r[i] = (unsigned char)((seq * 131 + (uint64_t)i) & 0xff);
        uint32_t crc = crc32_ieee(r, crc_offset);
        for (int i = 0; i < 4; ++i) r[crc_offset + i] = (unsigned char)(crc >> (8 * i));
        off_t where = (off_t)(seq % (uint64_t)slots) * record_size;
        if (pwrite(fd, r, record_size, where) == record_size) {
            say("VMHA-ACK %llu\n", (unsigned long long)seq, 0);
            ++seq;
        } else {
            say("VMHA-WRITE-ERROR %llu %llu\n", (unsigned long long)seq, (unsigned long long)errno);
            usleep(100000);
        }
        if (period) {
            next_at += period;
            uint64_t now = now_ns();
            if (next_at > now) {
                struct timespec ts = {(time_t)((next_at - now) / 1000000000u), (long)((next_at - now) % 1000000000u)};
                nanosleep(&ts, NULL);
            } else {
                next_at = now;  // behind: no burst to catch up
            }
        }
    }
}
