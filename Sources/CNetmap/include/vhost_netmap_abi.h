#ifndef VHOST_NETMAP_ABI_H
#define VHOST_NETMAP_ABI_H
// The netmap user ABI (API 14, x86-64 Linux), declared by this project: the structures the
// back-end exchanges with the netmap kernel module through /dev/netmap. Every size, offset,
// ioctl number and constant here is checked against ../shared/reference/netmap-abi.json (built
// from netmap's own headers) by Tests/NetmapTests/ABITests.swift.
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define VNM_API 14
#define VNM_MIN_API 14
#define VNM_MAX_API 15
#define VNM_REQ_IFNAMSIZ 64
#define VNM_REQ_MAXSIZE 4096
#define VNM_MAX_FRAGS 64

// ioctl numbers (type 'i').
#define VNM_NIOCCTRL 0xC0586997u
#define VNM_NIOCTXSYNC 0x6994u
#define VNM_NIOCRXSYNC 0x6995u

// NIOCCTRL request types.
enum {
    VNM_REQ_REGISTER = 1, VNM_REQ_PORT_INFO_GET = 2, VNM_REQ_VALE_ATTACH = 3, VNM_REQ_VALE_DETACH = 4,
    VNM_REQ_VALE_LIST = 5, VNM_REQ_PORT_HDR_SET = 6, VNM_REQ_PORT_HDR_GET = 7, VNM_REQ_VALE_NEWIF = 8,
    VNM_REQ_VALE_DELIF = 9, VNM_REQ_VALE_POLLING_ENABLE = 10, VNM_REQ_VALE_POLLING_DISABLE = 11,
    VNM_REQ_POOLS_INFO_GET = 12, VNM_REQ_SYNC_KLOOP_START = 13, VNM_REQ_SYNC_KLOOP_STOP = 14,
    VNM_REQ_CSB_ENABLE = 15,
};
// Option types.
enum { VNM_OPT_EXTMEM = 1, VNM_OPT_SYNC_KLOOP_EVENTFDS = 2, VNM_OPT_CSB = 3, VNM_OPT_SYNC_KLOOP_MODE = 4, VNM_OPT_OFFSETS = 5 };
// Register modes (nr_mode).
enum { VNM_REG_DEFAULT = 0, VNM_REG_ALL_NIC = 1, VNM_REG_SW = 2, VNM_REG_NIC_SW = 3, VNM_REG_ONE_NIC = 4,
       VNM_REG_NULL = 7, VNM_REG_ONE_SW = 8 };
// Register flags (nr_flags).
#define VNM_NR_MONITOR_TX 0x100ull
#define VNM_NR_MONITOR_RX 0x200ull
#define VNM_NR_ZCOPY_MON 0x400ull
#define VNM_NR_EXCLUSIVE 0x800ull
#define VNM_NR_RX_RINGS_ONLY 0x2000ull
#define VNM_NR_TX_RINGS_ONLY 0x4000ull
#define VNM_NR_ACCEPT_VNET_HDR 0x8000ull
#define VNM_NR_DO_RX_POLL 0x10000ull
#define VNM_NR_NO_TX_POLL 0x20000ull
// Slot flags.
#define VNM_NS_BUF_CHANGED 0x1
#define VNM_NS_REPORT 0x2
#define VNM_NS_FORWARD 0x4
#define VNM_NS_NO_LEARN 0x8
#define VNM_NS_INDIRECT 0x10
#define VNM_NS_MOREFRAG 0x20
#define VNM_NS_TXMON 0x40
#define VNM_NS_PORT_MASK 0xff00
// Polling modes.
#define VNM_POLLING_MODE_SINGLE_CPU 1
#define VNM_POLLING_MODE_MULTI_CPU 2
#define VNM_NI_PRIV_MEM 1

struct vnm_req_header {
    uint16_t nr_version;
    uint16_t nr_reqtype;
    uint32_t nr_reserved;
    char nr_name[VNM_REQ_IFNAMSIZ];
    uint64_t nr_options;
    uint64_t nr_body;
};

struct vnm_req_register {
    uint64_t nr_offset;
    uint64_t nr_memsize;
    uint32_t nr_tx_slots;
    uint32_t nr_rx_slots;
    uint16_t nr_tx_rings;
    uint16_t nr_rx_rings;
    uint16_t nr_host_tx_rings;
    uint16_t nr_host_rx_rings;
    uint16_t nr_mem_id;
    uint16_t nr_ringid;
    uint32_t nr_mode;
    uint32_t nr_extra_bufs;
    uint64_t nr_flags;
};

struct vnm_req_port_info_get {
    uint64_t nr_memsize;
    uint32_t nr_tx_slots;
    uint32_t nr_rx_slots;
    uint16_t nr_tx_rings;
    uint16_t nr_rx_rings;
    uint16_t nr_host_tx_rings;
    uint16_t nr_host_rx_rings;
    uint16_t nr_mem_id;
    uint16_t pad[3];
};

struct vnm_req_vale_attach {
    struct vnm_req_register reg;
    uint32_t port_index;
    uint32_t pad1;
};

struct vnm_req_vale_detach {
    uint32_t port_index;
    uint32_t pad1;
};

struct vnm_req_vale_list {
    uint16_t nr_bridge_idx;
    uint16_t pad1;
    uint32_t nr_port_idx;
};

struct vnm_req_port_hdr {
    uint32_t nr_hdr_len;
    uint32_t pad1;
};

struct vnm_req_vale_newif {
    uint32_t nr_tx_slots;
    uint32_t nr_rx_slots;
    uint16_t nr_tx_rings;
    uint16_t nr_rx_rings;
    uint16_t nr_mem_id;
    uint16_t pad1;
};

struct vnm_req_vale_polling {
    uint32_t nr_mode;
    uint32_t nr_first_cpu_id;
    uint32_t nr_num_polling_cpus;
    uint32_t pad1;
};

struct vnm_req_pools_info {
    uint64_t nr_memsize;
    uint16_t nr_mem_id;
    uint16_t pad1[3];
    uint64_t nr_if_pool_offset;
    uint32_t nr_if_pool_objtotal;
    uint32_t nr_if_pool_objsize;
    uint64_t nr_ring_pool_offset;
    uint32_t nr_ring_pool_objtotal;
    uint32_t nr_ring_pool_objsize;
    uint64_t nr_buf_pool_offset;
    uint32_t nr_buf_pool_objtotal;
    uint32_t nr_buf_pool_objsize;
};

struct vnm_req_sync_kloop_start {
    uint32_t sleep_us;
    uint32_t pad1;
};

struct vnm_req_option {
    uint64_t nro_next;
    uint32_t nro_reqtype;
    uint32_t nro_status;
    uint64_t nro_size;
};

struct vnm_opt_csb {
    struct vnm_req_option nro_opt;
    uint64_t csb_atok;
    uint64_t csb_ktoa;
};

struct vnm_kloop_eventfd { int32_t ioeventfd; int32_t irqfd; };

struct vnm_opt_sync_kloop_eventfds {
    struct vnm_req_option nro_opt;
    struct vnm_kloop_eventfd eventfds[];
};

struct vnm_opt_sync_kloop_mode {
    struct vnm_req_option nro_opt;
    uint32_t mode;
};

struct vnm_csb_atok {
    uint32_t head;
    uint32_t cur;
    uint32_t appl_need_kick;
    uint32_t sync_flags;
    uint32_t pad[12];
};

struct vnm_csb_ktoa {
    uint32_t hwcur;
    uint32_t hwtail;
    uint32_t kern_need_kick;
    uint32_t pad[13];
};

struct vnm_if {
    char ni_name[16];
    uint32_t ni_version;
    uint32_t ni_flags;
    uint32_t ni_tx_rings;
    uint32_t ni_rx_rings;
    uint32_t ni_bufs_head;
    uint32_t ni_host_tx_rings;
    uint32_t ni_host_rx_rings;
    uint32_t ni_spare1[3];
    int64_t ring_ofs[];
};

struct vnm_slot {
    uint32_t buf_idx;
    uint16_t len;
    uint16_t flags;
    uint64_t ptr;
};

struct vnm_ring {
    int64_t buf_ofs;
    uint32_t num_slots;
    uint32_t nr_buf_size;
    uint16_t ringid;
    uint16_t dir;
    uint32_t head;
    uint32_t cur;
    uint32_t tail;
    uint32_t flags;
    struct timeval ts;
    uint64_t offset_mask;
    uint64_t buf_align;
    // netmap aligns sem to NM_CACHE_ALIGN (128); spelled out so Swift can import the struct.
    uint8_t pad_before_sem[56];
    uint8_t sem[128];
    struct vnm_slot slot[];
};

/// One entry of the layout table the ABI test compares with netmap-abi.json: the name netmap's
/// headers use ("netmap_ring.head", "NIOCCTRL"), and our value.
struct vnm_layout_entry { const char *name; uint64_t value; };
/// The table (sizes, offsets, constants); `*count` gets its length.
const struct vnm_layout_entry *vnm_layout(int *count, int kind /* 0 sizes, 1 offsets, 2 constants */);

// The application's side of the CSB protocol of netmap's sync kernel loop (netmap.h's
// nm_sync_kloop_appl_write/read), with the ordering it prescribes: the kernel must never see a
// head newer than cur, nor the application a hwcur newer than hwtail; and each side enables its
// peer's notifications, then re-checks (store, full fence, load), so no wake-up is lost.

/// Publishes cur, then head, after every write to the ring's slots and buffers.
static inline void vnm_csb_appl_write(struct vnm_csb_atok *atok, uint32_t cur, uint32_t head) {
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&atok->cur, cur, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&atok->head, head, __ATOMIC_RELAXED);
}

/// Reads hwtail, then hwcur, before any read of the slots they expose.
static inline void vnm_csb_appl_read(const struct vnm_csb_ktoa *ktoa, uint32_t *hwtail, uint32_t *hwcur) {
    *hwtail = __atomic_load_n(&ktoa->hwtail, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    *hwcur = __atomic_load_n(&ktoa->hwcur, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
}

/// After a publish: whether the kernel loop sleeps and wants a kick on its ioeventfd.
static inline uint32_t vnm_csb_kernel_wants_kick(const struct vnm_csb_ktoa *ktoa) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(&ktoa->kern_need_kick, __ATOMIC_RELAXED);
}

/// Asks the kernel loop for (1) or against (0) a signal on the ring's irqfd; enabling is
/// followed by a full fence, so the caller's re-check of hwtail cannot pass it.
static inline void vnm_csb_set_appl_need_kick(struct vnm_csb_atok *atok, uint32_t value) {
    __atomic_store_n(&atok->appl_need_kick, value, __ATOMIC_RELAXED);
    if (value) __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/// ioctl(fd, NIOCCTRL, hdr); returns 0 or -errno.
int vnm_ctrl(int fd, struct vnm_req_header *hdr);
/// ioctl(fd, NIOCTXSYNC / NIOCRXSYNC); returns 0 or -errno.
int vnm_txsync(int fd);
int vnm_rxsync(int fd);

#endif
