// libc headers first: liburing.h defines _XOPEN_SOURCE/_GNU_SOURCE, and evaluating <features.h>
// under those first changes fd_set's member names, which breaks the module merge with SwiftGlibc.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <poll.h>
// swift-system's CSystem includes the kernel's <linux/io_uring.h>; liburing ships a copy under the
// same include guard. Taking the kernel's first gives both modules one definition to merge.
#include <linux/io_uring.h>
#include <liburing.h>
