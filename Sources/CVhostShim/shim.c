#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined (Package.swift sets it)"
#endif
#include "CVhostShim.h"
#include <errno.h>
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

int cvh_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
int cvh_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
int cvh_signalfd(int fd, const sigset_t *mask, int flags) { return signalfd(fd, mask, flags); }

int cvh_block_signals(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int cvh_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

int cvh_accept_nonblocking(int listener) {
    return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

int cvh_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
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
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *data = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i, sizeof(fd));
            if (*nfds < maxfds) {
                fds[(*nfds)++] = fd;
            } else {
                close(fd);
                (*dropped)++;
            }
        }
    }
    return n;
}

ssize_t cvh_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CVH_CMSG_FDS) { errno = EINVAL; return -1; }
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
    return n;
}

int cvh_sockaddr_un(struct sockaddr_un *addr, const char *path) {
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(addr->sun_path)) return -1;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, len + 1);
    return (int)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}
