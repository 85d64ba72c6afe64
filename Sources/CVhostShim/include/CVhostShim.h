#ifndef CVHOSTSHIM_H
#define CVHOSTSHIM_H
// What Glibc's Swift overlay does not export: CMSG macros, eventfd/memfd/signalfd, ioctl numbers.
// One convention: a function returns its result (a descriptor, a count, 0) on success and -errno
// on failure; Swift wrappers (VhostSystem) turn that into a thrown Errno.
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/signalfd.h>

int cvh_eventfd(unsigned int initval, int flags);
int cvh_memfd_create(const char *name, unsigned int flags);
int cvh_signalfd(int fd, const sigset_t *mask, int flags);
/// Seals a memfd against shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW): a mapping of it cannot fault.
int cvh_seal_against_shrinking(int fd);
int cvh_block_signals(const int *signals, int count);
int cvh_set_thread_name(const char *name);
int cvh_pin_thread(int cpu);
/// accept4 with SOCK_CLOEXEC|SOCK_NONBLOCK (a GNU extension Glibc's overlay hides).
int cvh_accept_nonblocking(int listener);

extern const int CVH_EFD_CLOEXEC;
extern const int CVH_EFD_NONBLOCK;
extern const int CVH_SFD_CLOEXEC;
extern const int CVH_SFD_NONBLOCK;
extern const unsigned int CVH_MFD_CLOEXEC;
extern const unsigned int CVH_MFD_ALLOW_SEALING;

/// Receives up to `len` bytes and up to `maxfds` SCM_RIGHTS descriptors (MSG_CMSG_CLOEXEC).
/// Returns bytes received (0 on EOF) or -errno. `*nfds` gets the count of descriptors
/// stored in `fds`; descriptors beyond `maxfds` are closed and counted in `*dropped`.
/// `*truncated` is set when the kernel truncated the control data (MSG_CTRUNC).
ssize_t cvh_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds,
                          int *nfds, int *dropped, int *truncated);
/// The one parser of received control data: takes a received message's SCM_RIGHTS descriptors,
/// up to `maxfds` into `fds` (returns how many), closes the rest (counted in `*dropped`), and
/// sets `*truncated` when the kernel cut the control data (MSG_CTRUNC). Used by
/// cvh_recv_with_fds and by io_uring receive completions.
int cvh_take_rights(struct msghdr *msg, int *fds, int maxfds, int *dropped, int *truncated);
/// Sends `len` bytes with `nfds` descriptors attached as SCM_RIGHTS; returns bytes sent or -errno.
ssize_t cvh_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// Fills a sockaddr_un; returns its length or -ENAMETOOLONG if the path does not fit.
int cvh_sockaddr_un(struct sockaddr_un *addr, const char *path);
/// The process id of a connected unix socket's peer (SO_PEERCRED), or -errno.
int cvh_peer_pid(int sock);

// TAP devices (<linux/if_tun.h>) and interface settings: ioctls whose numbers and structs
// Swift cannot import. Each returns 0 (or a descriptor) on success, -errno on failure.

/// Opens /dev/net/tun and attaches to (or creates) tap `name` with IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR, plus IFF_MULTI_QUEUE if `multiqueue`. Returns the descriptor.
int cvh_tap_open(const char *name, int multiqueue);
/// TUNSETVNETHDRSZ.
int cvh_tap_set_vnet_header_size(int fd, int size);
/// TUNSETOFFLOAD with TUN_F_* bits.
int cvh_tap_set_offload(int fd, unsigned int flags);
/// TUNSETQUEUE: IFF_ATTACH_QUEUE (enable) or IFF_DETACH_QUEUE.
int cvh_tap_set_queue_enabled(int fd, int enabled);
/// SIOCSIFMTU.
int cvh_if_set_mtu(const char *name, int mtu);
/// SIOCGIFMTU; returns the MTU.
int cvh_if_get_mtu(const char *name);
/// Sets IFF_UP (SIOCGIFFLAGS / SIOCSIFFLAGS).
int cvh_if_set_up(const char *name, int up);
/// 1 if interface `name` exists in this network namespace.
int cvh_if_exists(const char *name);

/// An AF_PACKET raw socket bound to interface `name` (all protocols), with PACKET_VNET_HDR if
/// `vnet_hdr` (frames then carry a 10-byte virtio-net header, GSO kept). Returns the descriptor.
int cvh_packet_socket(const char *name, int vnet_hdr);

/// Opens tap `name` without a virtio-net header (IFF_TAP | IFF_NO_PI), non-blocking.
int cvh_tap_open_plain(const char *name);

/// PACKET_MMAP (TPACKET_V2) rings on packet socket `fd`: `frames` frames of `frame_size` bytes
/// for RX and as many for TX, mapped together (RX first) at `*rings`. Returns 0 or -errno.
int cvh_packet_rings(int fd, unsigned frame_size, unsigned frames, void **rings);
/// Offset of the frame data in a TX ring frame, and the tpacket2_hdr fields we use.
unsigned cvh_tpacket2_data_offset(void);
unsigned cvh_tpacket2_status(const void *frame);
void cvh_tpacket2_set_status(void *frame, unsigned status);
unsigned cvh_tpacket2_len(const void *frame);
void cvh_tpacket2_set_len(void *frame, unsigned len);
unsigned cvh_tpacket2_mac(const void *frame);
/// The frame's sll_pkttype (PACKET_HOST, PACKET_OUTGOING = 4, ...).
unsigned cvh_tpacket2_pkttype(const void *frame);
extern const unsigned CVH_TP_STATUS_KERNEL, CVH_TP_STATUS_USER, CVH_TP_STATUS_SEND_REQUEST, CVH_TP_STATUS_AVAILABLE, CVH_TP_STATUS_WRONG_FORMAT;
/// PACKET_STATISTICS: frames the kernel dropped because the receive ring was full, since the
/// last call (the kernel resets the counters on read); -errno on failure.
long cvh_packet_ring_drops(int fd);
/// Kicks the TX ring: sendto(fd, NULL, 0, MSG_DONTWAIT).
int cvh_packet_tx_kick(int fd);
/// The interface's MAC address (6 bytes); 0 or -errno.
int cvh_if_mac(const char *name, unsigned char *mac);

extern const unsigned int CVH_TUN_F_CSUM;
extern const unsigned int CVH_TUN_F_TSO4;
extern const unsigned int CVH_TUN_F_TSO6;
extern const unsigned int CVH_TUN_F_TSO_ECN;

/// Cache prefetch hints: pull a line the other core wrote before we need it.
static inline void cvh_prefetch_read(const void *p) { __builtin_prefetch(p, 0, 3); }
static inline void cvh_prefetch_write(const void *p) { __builtin_prefetch(p, 1, 3); }

/// ThreadSanitizer builds only (Swift calls these under VHOST_NETMAP_TSAN): the guest orders
/// what the device's threads do to its memory. A buffer used on one ring (a release store) comes
/// back on another ring (an acquire load) through a process TSan does not see, so these tell it:
/// every release into guest rings and acquire from them goes through one sync object. Empty
/// when shim.c is not built with -fsanitize=thread.
void cvh_tsan_guest_acquire(void);
void cvh_tsan_guest_release(void);

#endif
