/*
 * vxtap_native: the C side of vxtap, one header for its parts.
 *
 *   binding.c  N-API glue only: converts and checks arguments, calls the parts below, turns -errno into
 *              exceptions, runs the poll handles' callbacks into JS, exports the methods and constants
 *   sys.c      setup syscalls: TAP open (inside a namespace if asked) and ioctls, UDP sockets; busy polling
 *   io.c       batched I/O: TAP reads and writes through io_uring (liburing) or plain syscalls, recvmmsg, and
 *              sendmmsg with datagrams coalesced into UDP GSO sends
 *   kernels.c  per-byte work: ones'-complement sums (AVX2 where the CPU has it), TSO split, GRO checks and runs
 *   vtep.c     the IPv6 VTEP table: the ids IPv6 VTEP addresses have in the batch calls
 *   crypto.c   AEAD (AES-256-GCM, OpenSSL EVP) over datagrams in an arena, for encrypted networks
 *
 * Nothing here makes a forwarding decision: TypeScript validates, decides and counts; C makes the syscalls and
 * does the per-byte work that JS cannot do fast. Every function of io.c, sys.c and kernels.c takes plain C
 * arguments and returns a result or -errno; none of them knows N-API.
 *
 * Batched I/O works on one "arena" (a Buffer cut into fixed-size slots), so a call passes one pointer, not an
 * array of Buffers. A VTEP address crosses the boundary as one uint32: an IPv4 address in host order, or an IPv6
 * VTEP's id (1 .. VX_VTEP6_MAX, inside 0.0.0.0/8, which no IPv4 VTEP can have; see vtep.c).
 */
#ifndef VXTAP_H
#define VXTAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
/* UDP segmentation offload on TAPs (Linux 6.2); older headers lack the flags, an older kernel refuses them */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

/* Frames or datagrams in one batch call, and transmit sockets in one sendBatch. */
#define VX_MAX_BATCH 256
#define VX_MAX_SOCKETS 64
/* Descriptor strides: writeBatch [fd, off, len, prefix], sendBatch [sock, off, len, vtep, port, gsoSize]. */
#define VX_WRITE_STRIDE 4
#define VX_SEND_STRIDE 6

/* ---- sys.c */

/* Opens /dev/net/tun as `name` (in: the wanted name; out: the kernel's) with `flags`, inside the network
 * namespace at ns_path if it is not NULL or empty. Returns the fd, or -errno; *where names the failed step. */
int vx_tap_open(char name[16], int flags, const char *ns_path, const char **where);
/* which: 0 TUNSETPERSIST, 1 TUNSETOFFLOAD, 2 TUNSETVNETHDRSZ. Returns 0 or -errno; -EINVAL for another which. */
int vx_tap_ioctl(int fd, int which, int value);
const char *vx_tap_ioctl_name(int which);
/* A non-blocking UDP socket bound to vtep:port (0: any port; an IPv6 VTEP gives an IPv6-only socket), with the
 * buffer sizes asked (root may exceed the sysctl caps) and UDP_GRO if asked. Returns the fd and *bound_port, or
 * -errno; *where names the failed step. */
int vx_udp_open(uint32_t vtep, uint16_t port, uint32_t rcvbuf, uint32_t sndbuf, bool gro, uint16_t *bound_port,
                const char **where);
/* The socket's buffer sizes as the kernel reports them. Returns 0 or -errno. */
int vx_sock_info(int fd, int *rcvbuf, int *sndbuf);

/* Busy polling: see sys.c. A window of 0 turns it off; vx_busy_touch() marks data-plane activity. */
struct uv_loop_s;
void vx_busy_set(struct uv_loop_s *loop, uint32_t window_us);
void vx_busy_touch(void);
void vx_busy_stats(double *hits, double *spin_ns);

/* ---- io.c */

/* io_uring for the TAP batches: on (true) or off, with the reason in *why (a static string). */
bool vx_uring_status(const char **why);
/* Switches io_uring off for the process (true), or back on if it was switched off that way (false). */
void vx_uring_disable(bool off);
void vx_io_stats(uint64_t *enters, uint64_t *ops, uint64_t *single_reads, uint64_t *coalesced_msgs,
                 uint64_t *coalesced_dgrams);

/* slot/offset/max/lens fit the arena, for the read-side batch calls. */
bool vx_slots_ok(size_t arena_len, uint32_t slot, uint32_t offset, uint32_t max, size_t lens_count);
/* Up to max frames from a TAP, frame i at arena[i*slot + offset], lens[i] = its bytes. Returns n or -errno. */
int64_t vx_read_batch(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t max, int32_t *lens);
/* Writes each descriptor [fd, off, len, prefix] (prefix: that many zero bytes first, a virtio-net header);
 * a failed one gets len = -errno. Returns the number written. */
int32_t vx_write_batch(uint8_t *arena, size_t arena_len, int32_t *descs, uint32_t count);
/* recvmmsg: datagram i at arena[i*slot + offset], lens[i] (-EMSGSIZE: truncated), addrs[2i] = its VTEP number,
 * addrs[2i+1] = port, gso[i] = the UDP GRO segment size (0: a single datagram) if gso. Returns n or -errno. */
int64_t vx_recv_batch(int fd, uint8_t *arena, uint32_t slot, uint32_t offset, uint32_t max, int32_t *lens,
                      uint32_t *addrs, int32_t *gso);
/* Sends each descriptor [sock, off, len, vtep, port, gsoSize] on fds[sock]: one sendmmsg per socket, runs of
 * equal datagrams coalesced into UDP GSO sends. A failed one gets len = -errno (-EDESTADDRREQ: an IPv6 id never
 * registered). Returns the number sent. */
int32_t vx_send_batch(const int32_t *fds, size_t nfds, uint8_t *arena, size_t arena_len, int32_t *descs,
                      uint32_t count);

/* ---- vtep.c */

#define VX_VTEP6_MAX 0xffffffu
typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} vx_sockaddr;
/* Registers IPv6 address a as VTEP id (1 .. VX_VTEP6_MAX). 0, -EINVAL (bad id, or ::), -EEXIST (the id has another
 * address, or the address another id), -ENOMEM. */
int vx_vtep6_set(uint32_t id, const uint8_t a[16]);
/* The id of IPv6 address a, or 0 (never registered). */
uint32_t vx_vtep6_id(const uint8_t a[16]);
/* The socket address of VTEP vtep (IPv4 address or IPv6 id) and port; returns its length, 0 for an unknown id. */
socklen_t vx_vtep_sockaddr(uint32_t vtep, uint16_t port, vx_sockaddr *out);
/* A received datagram's source as a VTEP number (0: an IPv6 address with no id) and its port. */
uint32_t vx_vtep_of(const vx_sockaddr *sa, uint16_t *port);

/* ---- crypto.c */

#define VX_AEAD_KEY 32   /* AES-256 */
#define VX_AEAD_NONCE 12 /* salt (4) || counter (8) */
#define VX_AEAD_TAG 16
#define VX_AEAD_AAD 20 /* VXLAN header (8) + crypto header: key id (1), reserved (3), counter (8) */
#define VX_AEAD_SLOTS 65536
/* Descriptor stride of aeadSeal/aeadOpen: [off, len, slot]. */
#define VX_AEAD_STRIDE 3
/* Sets slot's key and nonce salt (0, -EINVAL, -ENOMEM, -EIO); drop frees it. */
int vx_aead_key(uint32_t slot, const uint8_t key[VX_AEAD_KEY], const uint8_t salt[4]);
void vx_aead_drop(uint32_t slot);
/* Seals each datagram [off, len, slot] in place (len: header + plaintext); the tag goes at off+len and len grows
 * by VX_AEAD_TAG. A failed one gets len = -errno. Returns the number sealed. */
int32_t vx_aead_seal(uint8_t *arena, size_t alen, int32_t *descs, uint32_t count);
/* Opens each datagram [off, len, slot] in place (len includes the tag); len shrinks by VX_AEAD_TAG. A failed one
 * gets len = -EBADMSG (authentication failed) or -EINVAL/-EIO. Returns the number opened. */
int32_t vx_aead_open(uint8_t *arena, size_t alen, int32_t *descs, uint32_t count);

/* ---- kernels.c */

void vx_kernels_init(void);
/* sum16: the folded ones'-complement sum of p[0..n) as big-endian words, plus initial (src/vxlan/checksum.ts). */
uint32_t vx_sum16(const uint8_t *p, size_t n, uint32_t initial);
/* tsoSplit: see kernels.c. Returns the frame count (out[0..2] = count, stride, total) or -1. */
int32_t vx_tso_split(uint8_t *buf, size_t blen, uint32_t off, uint32_t len, uint32_t mss, uint32_t dst_off,
                     uint32_t prefix, int32_t vni, int32_t out[3]);
/* The header bytes vx_gro_segment may be given for the frame at f. */
bool vx_gro_hdrs_ok(const uint8_t *f, uint32_t hdrs);
/* groSegment: -1 bad checksum, 0 not appended, 1 appended (see kernels.c). */
int vx_gro_segment(uint8_t *buf, uint32_t off, uint32_t len, uint32_t hdrs, int32_t ref, int32_t dst);
/* groRun: the datagrams appended (see kernels.c); st: in/out state of six int32. */
int32_t vx_gro_run(uint8_t *buf, uint32_t first, uint32_t from, uint32_t end, uint32_t step, int32_t ref,
                   uint32_t hdrs, int32_t st[6]);

#endif
