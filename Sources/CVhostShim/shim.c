#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined (Package.swift sets it)"
#endif
#include "CVhostShim.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

const int CVH_EFD_CLOEXEC = EFD_CLOEXEC;
const int CVH_EFD_NONBLOCK = EFD_NONBLOCK;
const int CVH_SFD_CLOEXEC = SFD_CLOEXEC;
const int CVH_SFD_NONBLOCK = SFD_NONBLOCK;
const unsigned int CVH_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int CVH_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;

// Every function here returns what the call returns on success and -errno on failure (the
// convention of the kernel and liburing), so Swift never reads errno after a C call.
#define CVH_RESULT(call) ({ __typeof__(call) r_ = (call); r_ < 0 ? -(__typeof__(r_))errno : r_; })

int cvh_eventfd(unsigned int initval, int flags) { return CVH_RESULT(eventfd(initval, flags)); }
int cvh_memfd_create(const char *name, unsigned int flags) { return CVH_RESULT(memfd_create(name, flags)); }
int cvh_signalfd(int fd, const sigset_t *mask, int flags) { return CVH_RESULT(signalfd(fd, mask, flags)); }
int cvh_seal_against_shrinking(int fd) { return CVH_RESULT(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)); }

int cvh_block_signals(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    return -pthread_sigmask(SIG_BLOCK, &set, NULL);  // pthread calls return the error number
}

int cvh_set_thread_name(const char *name) { return -pthread_setname_np(pthread_self(), name); }

int cvh_accept_nonblocking(int listener) {
    return CVH_RESULT(accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK));
}

int cvh_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// vhost-user carries at most 8 fds per message; room for more lets us see (and close) surplus ones.
#define CVH_CMSG_FDS 32

ssize_t cvh_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds,
                          int *nfds, int *dropped, int *truncated) {
    union {
        char buf[CMSG_SPACE(sizeof(int) * CVH_CMSG_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    *dropped = 0;
    *truncated = 0;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    *nfds = cvh_take_rights(&msg, fds, maxfds, dropped, truncated);
    return n;
}

int cvh_take_rights(struct msghdr *msg, int *fds, int maxfds, int *dropped, int *truncated) {
    int stored = 0;
    *dropped = 0;
    *truncated = (msg->msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i * sizeof(int), sizeof(fd));
            if (stored < maxfds) {
                fds[stored++] = fd;
            } else {
                close(fd);
                (*dropped)++;
            }
        }
    }
    return stored;
}

ssize_t cvh_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CVH_CMSG_FDS) return -EINVAL;
    union {
        char buf[CMSG_SPACE(sizeof(int) * CVH_CMSG_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int cvh_sockaddr_un(struct sockaddr_un *addr, const char *path) {
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(addr->sun_path)) return -ENAMETOOLONG;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, len + 1);
    return (int)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

// MARK: TAP devices

#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/if_tun.h>

const unsigned int CVH_TUN_F_CSUM = TUN_F_CSUM;
const unsigned int CVH_TUN_F_TSO4 = TUN_F_TSO4;
const unsigned int CVH_TUN_F_TSO6 = TUN_F_TSO6;
const unsigned int CVH_TUN_F_TSO_ECN = TUN_F_TSO_ECN;

int cvh_tap_open(const char *name, int multiqueue) {
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multiqueue ? IFF_MULTI_QUEUE : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int cvh_tap_set_vnet_header_size(int fd, int size) {
    return ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? -errno : 0;
}

int cvh_tap_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0;
}

int cvh_tap_set_queue_enabled(int fd, int enabled) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    return ioctl(fd, TUNSETQUEUE, &ifr) < 0 ? -errno : 0;
}

static int cvh_ifreq_ioctl(const char *name, unsigned long request, struct ifreq *ifr) {
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(s, request, ifr) < 0 ? -errno : 0;
    close(s);
    return rc;
}

int cvh_if_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_mtu = mtu;
    return cvh_ifreq_ioctl(name, SIOCSIFMTU, &ifr);
}

int cvh_if_get_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    int rc = cvh_ifreq_ioctl(name, SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

int cvh_if_set_up(const char *name, int up) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    int rc = cvh_ifreq_ioctl(name, SIOCGIFFLAGS, &ifr);
    if (rc < 0) return rc;
    if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
    return cvh_ifreq_ioctl(name, SIOCSIFFLAGS, &ifr);
}

int cvh_if_exists(const char *name) { return if_nametoindex(name) != 0; }

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>

int cvh_packet_socket(const char *name, int vnet_hdr) {
    unsigned int index = if_nametoindex(name);
    if (index == 0) return -errno;
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) return -errno;
    int on = 1;
    if (vnet_hdr && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof(on)) < 0) {
        int e = errno; close(fd); return -e;
    }
    struct sockaddr_ll addr;
    memset(&addr, 0, sizeof(addr));
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = (int)index;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno; close(fd); return -e;
    }
    return fd;
}

// MARK: plain TAP and PACKET_MMAP (pkt-gen)

int cvh_tap_open_plain(const char *name) {
    if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); return -e; }
    return fd;
}

const unsigned CVH_TP_STATUS_KERNEL = TP_STATUS_KERNEL;
const unsigned CVH_TP_STATUS_USER = TP_STATUS_USER;
const unsigned CVH_TP_STATUS_SEND_REQUEST = TP_STATUS_SEND_REQUEST;
const unsigned CVH_TP_STATUS_AVAILABLE = TP_STATUS_AVAILABLE;
const unsigned CVH_TP_STATUS_WRONG_FORMAT = TP_STATUS_WRONG_FORMAT;

int cvh_packet_rings(int fd, unsigned frame_size, unsigned frames, void **rings) {
    int version = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) < 0) return -errno;
    struct tpacket_req req;
    req.tp_block_size = frame_size * 16;
    req.tp_block_nr = frames / 16;
    req.tp_frame_size = frame_size;
    req.tp_frame_nr = (frames / 16) * 16;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) return -errno;
    if (setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req)) < 0) return -errno;
    size_t size = (size_t)req.tp_block_size * req.tp_block_nr * 2;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -errno;
    *rings = p;
    return 0;
}

unsigned cvh_tpacket2_data_offset(void) { return TPACKET2_HDRLEN - sizeof(struct sockaddr_ll); }
unsigned cvh_tpacket2_status(const void *frame) { return __atomic_load_n(&((const struct tpacket2_hdr *)frame)->tp_status, __ATOMIC_ACQUIRE); }
void cvh_tpacket2_set_status(void *frame, unsigned status) { __atomic_store_n(&((struct tpacket2_hdr *)frame)->tp_status, status, __ATOMIC_RELEASE); }
unsigned cvh_tpacket2_len(const void *frame) { return ((const struct tpacket2_hdr *)frame)->tp_snaplen; }
void cvh_tpacket2_set_len(void *frame, unsigned len) { ((struct tpacket2_hdr *)frame)->tp_len = len; ((struct tpacket2_hdr *)frame)->tp_snaplen = len; }
unsigned cvh_tpacket2_mac(const void *frame) { return ((const struct tpacket2_hdr *)frame)->tp_mac; }
int cvh_packet_tx_kick(int fd) { return sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 ? -errno : 0; }

int cvh_if_mac(const char *name, unsigned char *mac) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    int rc = cvh_ifreq_ioctl(name, SIOCGIFHWADDR, &ifr);
    if (rc < 0) return rc;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}
unsigned cvh_tpacket2_pkttype(const void *frame) {
    const struct sockaddr_ll *ll = (const struct sockaddr_ll *)((const char *)frame + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
    return ll->sll_pkttype;
}
long cvh_packet_ring_drops(int fd) {
    struct tpacket_stats st;
    socklen_t len = sizeof(st);
    if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0) return -errno;
    return st.tp_drops;
}

int cvh_peer_pid(int sock) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
    return cred.pid;
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CVH_THREAD_SANITIZER 1
#endif
#endif
#ifdef CVH_THREAD_SANITIZER
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char guest_sync;
void cvh_tsan_guest_acquire(void) { __tsan_acquire(&guest_sync); }
void cvh_tsan_guest_release(void) { __tsan_release(&guest_sync); }
#else
void cvh_tsan_guest_acquire(void) {}
void cvh_tsan_guest_release(void) {}
#endif
