// libc headers first: liburing.h defines _XOPEN_SOURCE/_GNU_SOURCE, and evaluating <features.h>
// under those first changes fd_set's member names, which breaks the module merge with SwiftGlibc.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
// swift-system's CSystem includes the kernel's <linux/io_uring.h>; liburing ships a copy under the
// same include guard. Taking the kernel's first gives both modules one definition to merge.
#include <linux/io_uring.h>
#include <liburing.h>

// recvmsg through io_uring: the msghdr, iovec and control buffer must stay put until the
// completion, so they live together in one slot that the caller allocates.
#define CUR_MAX_FDS 32
struct cur_recv_slot {
    struct msghdr msg;
    struct iovec iov;
    union {
        char buf[CMSG_SPACE(sizeof(int) * CUR_MAX_FDS)];
        struct cmsghdr align;
    } control;
};

static inline void cur_prep_recvmsg(struct io_uring_sqe *sqe, int fd, struct cur_recv_slot *slot,
                                    void *buf, size_t len) {
    memset(&slot->msg, 0, sizeof(slot->msg));
    slot->iov.iov_base = buf;
    slot->iov.iov_len = len;
    slot->msg.msg_iov = &slot->iov;
    slot->msg.msg_iovlen = 1;
    slot->msg.msg_control = slot->control.buf;
    slot->msg.msg_controllen = sizeof(slot->control.buf);
    io_uring_prep_recvmsg(sqe, fd, &slot->msg, MSG_CMSG_CLOEXEC);
}

static inline void cur_prep_multishot_accept(struct io_uring_sqe *sqe, int fd) {
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

static const unsigned int CUR_CQE_F_MORE = IORING_CQE_F_MORE;
static const unsigned char CUR_SQE_FIXED_FILE = IOSQE_FIXED_FILE;
