#include "vhost_netmap_abi.h"
#include <errno.h>
#include <sys/ioctl.h>

int vnm_ctrl(int fd, struct vnm_req_header *hdr) { return ioctl(fd, VNM_NIOCCTRL, hdr) < 0 ? -errno : 0; }
int vnm_txsync(int fd) { return ioctl(fd, VNM_NIOCTXSYNC) < 0 ? -errno : 0; }
int vnm_rxsync(int fd) { return ioctl(fd, VNM_NIOCRXSYNC) < 0 ? -errno : 0; }

#define SZ(ours, theirs) { #theirs, sizeof(struct ours) }
#define OF(ours, theirs, field) { #theirs "." #field, offsetof(struct ours, field) }
#define OFN(ours, theirs, field, name) { #theirs "." name, offsetof(struct ours, field) }
#define K(name, value) { #name, (uint64_t)(value) }

static const struct vnm_layout_entry sizes[] = {
    SZ(vnm_req_header, nmreq_header), SZ(vnm_req_register, nmreq_register),
    SZ(vnm_req_port_info_get, nmreq_port_info_get), SZ(vnm_req_vale_attach, nmreq_vale_attach),
    SZ(vnm_req_vale_detach, nmreq_vale_detach), SZ(vnm_req_vale_list, nmreq_vale_list),
    SZ(vnm_req_port_hdr, nmreq_port_hdr), SZ(vnm_req_vale_newif, nmreq_vale_newif),
    SZ(vnm_req_vale_polling, nmreq_vale_polling), SZ(vnm_req_pools_info, nmreq_pools_info),
    SZ(vnm_req_sync_kloop_start, nmreq_sync_kloop_start), SZ(vnm_req_option, nmreq_option),
    SZ(vnm_opt_sync_kloop_eventfds, nmreq_opt_sync_kloop_eventfds),
    { "nmreq_opt_sync_kloop_eventfds.eventfds[]_element", sizeof(struct vnm_kloop_eventfd) },
    SZ(vnm_opt_sync_kloop_mode, nmreq_opt_sync_kloop_mode), SZ(vnm_opt_csb, nmreq_opt_csb),
    SZ(vnm_csb_atok, nm_csb_atok), SZ(vnm_csb_ktoa, nm_csb_ktoa),
    SZ(vnm_if, netmap_if), SZ(vnm_ring, netmap_ring), SZ(vnm_slot, netmap_slot),
    { "timeval", sizeof(struct timeval) },
};

static const struct vnm_layout_entry offsets[] = {
    OF(vnm_req_header, nmreq_header, nr_version), OF(vnm_req_header, nmreq_header, nr_reqtype),
    OF(vnm_req_header, nmreq_header, nr_reserved), OF(vnm_req_header, nmreq_header, nr_name),
    OF(vnm_req_header, nmreq_header, nr_options), OF(vnm_req_header, nmreq_header, nr_body),
    OF(vnm_req_register, nmreq_register, nr_offset), OF(vnm_req_register, nmreq_register, nr_memsize),
    OF(vnm_req_register, nmreq_register, nr_tx_slots), OF(vnm_req_register, nmreq_register, nr_rx_slots),
    OF(vnm_req_register, nmreq_register, nr_tx_rings), OF(vnm_req_register, nmreq_register, nr_rx_rings),
    OF(vnm_req_register, nmreq_register, nr_host_tx_rings), OF(vnm_req_register, nmreq_register, nr_host_rx_rings),
    OF(vnm_req_register, nmreq_register, nr_mem_id), OF(vnm_req_register, nmreq_register, nr_ringid),
    OF(vnm_req_register, nmreq_register, nr_mode), OF(vnm_req_register, nmreq_register, nr_extra_bufs),
    OF(vnm_req_register, nmreq_register, nr_flags),
    OF(vnm_req_port_info_get, nmreq_port_info_get, nr_memsize), OF(vnm_req_port_info_get, nmreq_port_info_get, nr_tx_slots),
    OF(vnm_req_port_info_get, nmreq_port_info_get, nr_rx_slots), OF(vnm_req_port_info_get, nmreq_port_info_get, nr_tx_rings),
    OF(vnm_req_port_info_get, nmreq_port_info_get, nr_rx_rings), OF(vnm_req_port_info_get, nmreq_port_info_get, nr_host_tx_rings),
    OF(vnm_req_port_info_get, nmreq_port_info_get, nr_host_rx_rings), OF(vnm_req_port_info_get, nmreq_port_info_get, nr_mem_id),
    OF(vnm_req_port_info_get, nmreq_port_info_get, pad),
    OF(vnm_req_vale_attach, nmreq_vale_attach, reg), OF(vnm_req_vale_attach, nmreq_vale_attach, port_index),
    OF(vnm_req_vale_attach, nmreq_vale_attach, pad1),
    OF(vnm_req_vale_detach, nmreq_vale_detach, port_index), OF(vnm_req_vale_detach, nmreq_vale_detach, pad1),
    OF(vnm_req_vale_list, nmreq_vale_list, nr_bridge_idx), OF(vnm_req_vale_list, nmreq_vale_list, pad1),
    OF(vnm_req_vale_list, nmreq_vale_list, nr_port_idx),
    OF(vnm_req_port_hdr, nmreq_port_hdr, nr_hdr_len), OF(vnm_req_port_hdr, nmreq_port_hdr, pad1),
    OF(vnm_req_vale_newif, nmreq_vale_newif, nr_tx_slots), OF(vnm_req_vale_newif, nmreq_vale_newif, nr_rx_slots),
    OF(vnm_req_vale_newif, nmreq_vale_newif, nr_tx_rings), OF(vnm_req_vale_newif, nmreq_vale_newif, nr_rx_rings),
    OF(vnm_req_vale_newif, nmreq_vale_newif, nr_mem_id), OF(vnm_req_vale_newif, nmreq_vale_newif, pad1),
    OF(vnm_req_vale_polling, nmreq_vale_polling, nr_mode), OF(vnm_req_vale_polling, nmreq_vale_polling, nr_first_cpu_id),
    OF(vnm_req_vale_polling, nmreq_vale_polling, nr_num_polling_cpus), OF(vnm_req_vale_polling, nmreq_vale_polling, pad1),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_memsize), OF(vnm_req_pools_info, nmreq_pools_info, nr_mem_id),
    OF(vnm_req_pools_info, nmreq_pools_info, pad1),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_if_pool_offset), OF(vnm_req_pools_info, nmreq_pools_info, nr_if_pool_objtotal),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_if_pool_objsize), OF(vnm_req_pools_info, nmreq_pools_info, nr_ring_pool_offset),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_ring_pool_objtotal), OF(vnm_req_pools_info, nmreq_pools_info, nr_ring_pool_objsize),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_buf_pool_offset), OF(vnm_req_pools_info, nmreq_pools_info, nr_buf_pool_objtotal),
    OF(vnm_req_pools_info, nmreq_pools_info, nr_buf_pool_objsize),
    OF(vnm_req_sync_kloop_start, nmreq_sync_kloop_start, sleep_us), OF(vnm_req_sync_kloop_start, nmreq_sync_kloop_start, pad1),
    OF(vnm_req_option, nmreq_option, nro_next), OF(vnm_req_option, nmreq_option, nro_reqtype),
    OF(vnm_req_option, nmreq_option, nro_status), OF(vnm_req_option, nmreq_option, nro_size),
    OF(vnm_opt_sync_kloop_eventfds, nmreq_opt_sync_kloop_eventfds, nro_opt),
    OF(vnm_opt_sync_kloop_eventfds, nmreq_opt_sync_kloop_eventfds, eventfds),
    { "nmreq_opt_sync_kloop_eventfds.eventfds[].ioeventfd", offsetof(struct vnm_kloop_eventfd, ioeventfd) },
    { "nmreq_opt_sync_kloop_eventfds.eventfds[].irqfd", offsetof(struct vnm_kloop_eventfd, irqfd) },
    OF(vnm_opt_sync_kloop_mode, nmreq_opt_sync_kloop_mode, nro_opt), OF(vnm_opt_sync_kloop_mode, nmreq_opt_sync_kloop_mode, mode),
    OF(vnm_opt_csb, nmreq_opt_csb, nro_opt), OF(vnm_opt_csb, nmreq_opt_csb, csb_atok), OF(vnm_opt_csb, nmreq_opt_csb, csb_ktoa),
    OF(vnm_csb_atok, nm_csb_atok, head), OF(vnm_csb_atok, nm_csb_atok, cur), OF(vnm_csb_atok, nm_csb_atok, appl_need_kick),
    OF(vnm_csb_atok, nm_csb_atok, sync_flags), OF(vnm_csb_atok, nm_csb_atok, pad),
    OF(vnm_csb_ktoa, nm_csb_ktoa, hwcur), OF(vnm_csb_ktoa, nm_csb_ktoa, hwtail), OF(vnm_csb_ktoa, nm_csb_ktoa, kern_need_kick),
    OF(vnm_csb_ktoa, nm_csb_ktoa, pad),
    OF(vnm_if, netmap_if, ni_name), OF(vnm_if, netmap_if, ni_version), OF(vnm_if, netmap_if, ni_flags),
    OF(vnm_if, netmap_if, ni_tx_rings), OF(vnm_if, netmap_if, ni_rx_rings), OF(vnm_if, netmap_if, ni_bufs_head),
    OF(vnm_if, netmap_if, ni_host_tx_rings), OF(vnm_if, netmap_if, ni_host_rx_rings), OF(vnm_if, netmap_if, ni_spare1),
    OF(vnm_if, netmap_if, ring_ofs),
    OF(vnm_ring, netmap_ring, buf_ofs), OF(vnm_ring, netmap_ring, num_slots), OF(vnm_ring, netmap_ring, nr_buf_size),
    OF(vnm_ring, netmap_ring, ringid), OF(vnm_ring, netmap_ring, dir), OF(vnm_ring, netmap_ring, head),
    OF(vnm_ring, netmap_ring, cur), OF(vnm_ring, netmap_ring, tail), OF(vnm_ring, netmap_ring, flags),
    OF(vnm_ring, netmap_ring, ts), OF(vnm_ring, netmap_ring, offset_mask), OF(vnm_ring, netmap_ring, buf_align),
    OF(vnm_ring, netmap_ring, sem), OF(vnm_ring, netmap_ring, slot),
    OF(vnm_slot, netmap_slot, buf_idx), OF(vnm_slot, netmap_slot, len), OF(vnm_slot, netmap_slot, flags),
    OF(vnm_slot, netmap_slot, ptr),
};

static const struct vnm_layout_entry constants[] = {
    K(NETMAP_API, VNM_API), K(NETMAP_MIN_API, VNM_MIN_API), K(NETMAP_MAX_API, VNM_MAX_API),
    K(NETMAP_REQ_MAXSIZE, VNM_REQ_MAXSIZE), K(NETMAP_REQ_IFNAMSIZ, VNM_REQ_IFNAMSIZ), K(NETMAP_MAX_FRAGS, VNM_MAX_FRAGS),
    K(NIOCCTRL, VNM_NIOCCTRL), K(NIOCTXSYNC, VNM_NIOCTXSYNC), K(NIOCRXSYNC, VNM_NIOCRXSYNC),
    K(NETMAP_REQ_REGISTER, VNM_REQ_REGISTER), K(NETMAP_REQ_PORT_INFO_GET, VNM_REQ_PORT_INFO_GET),
    K(NETMAP_REQ_VALE_ATTACH, VNM_REQ_VALE_ATTACH), K(NETMAP_REQ_VALE_DETACH, VNM_REQ_VALE_DETACH),
    K(NETMAP_REQ_VALE_LIST, VNM_REQ_VALE_LIST), K(NETMAP_REQ_PORT_HDR_SET, VNM_REQ_PORT_HDR_SET),
    K(NETMAP_REQ_PORT_HDR_GET, VNM_REQ_PORT_HDR_GET), K(NETMAP_REQ_VALE_NEWIF, VNM_REQ_VALE_NEWIF),
    K(NETMAP_REQ_VALE_DELIF, VNM_REQ_VALE_DELIF), K(NETMAP_REQ_VALE_POLLING_ENABLE, VNM_REQ_VALE_POLLING_ENABLE),
    K(NETMAP_REQ_VALE_POLLING_DISABLE, VNM_REQ_VALE_POLLING_DISABLE), K(NETMAP_REQ_POOLS_INFO_GET, VNM_REQ_POOLS_INFO_GET),
    K(NETMAP_REQ_SYNC_KLOOP_START, VNM_REQ_SYNC_KLOOP_START), K(NETMAP_REQ_SYNC_KLOOP_STOP, VNM_REQ_SYNC_KLOOP_STOP),
    K(NETMAP_REQ_CSB_ENABLE, VNM_REQ_CSB_ENABLE),
    K(NETMAP_REQ_OPT_EXTMEM, VNM_OPT_EXTMEM), K(NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS, VNM_OPT_SYNC_KLOOP_EVENTFDS),
    K(NETMAP_REQ_OPT_CSB, VNM_OPT_CSB), K(NETMAP_REQ_OPT_SYNC_KLOOP_MODE, VNM_OPT_SYNC_KLOOP_MODE),
    K(NETMAP_REQ_OPT_OFFSETS, VNM_OPT_OFFSETS),
    K(NR_REG_DEFAULT, VNM_REG_DEFAULT), K(NR_REG_ALL_NIC, VNM_REG_ALL_NIC), K(NR_REG_SW, VNM_REG_SW),
    K(NR_REG_NIC_SW, VNM_REG_NIC_SW), K(NR_REG_ONE_NIC, VNM_REG_ONE_NIC), K(NR_REG_NULL, VNM_REG_NULL),
    K(NR_REG_ONE_SW, VNM_REG_ONE_SW),
    K(NR_MONITOR_TX, VNM_NR_MONITOR_TX), K(NR_MONITOR_RX, VNM_NR_MONITOR_RX), K(NR_ZCOPY_MON, VNM_NR_ZCOPY_MON),
    K(NR_EXCLUSIVE, VNM_NR_EXCLUSIVE), K(NR_RX_RINGS_ONLY, VNM_NR_RX_RINGS_ONLY), K(NR_TX_RINGS_ONLY, VNM_NR_TX_RINGS_ONLY),
    K(NR_ACCEPT_VNET_HDR, VNM_NR_ACCEPT_VNET_HDR), K(NR_DO_RX_POLL, VNM_NR_DO_RX_POLL), K(NR_NO_TX_POLL, VNM_NR_NO_TX_POLL),
    K(NI_PRIV_MEM, VNM_NI_PRIV_MEM),
    K(NS_BUF_CHANGED, VNM_NS_BUF_CHANGED), K(NS_REPORT, VNM_NS_REPORT), K(NS_FORWARD, VNM_NS_FORWARD),
    K(NS_NO_LEARN, VNM_NS_NO_LEARN), K(NS_INDIRECT, VNM_NS_INDIRECT), K(NS_MOREFRAG, VNM_NS_MOREFRAG),
    K(NS_TXMON, VNM_NS_TXMON), K(NS_PORT_MASK, VNM_NS_PORT_MASK),
    K(NETMAP_POLLING_MODE_SINGLE_CPU, VNM_POLLING_MODE_SINGLE_CPU), K(NETMAP_POLLING_MODE_MULTI_CPU, VNM_POLLING_MODE_MULTI_CPU),
};

const struct vnm_layout_entry *vnm_layout(int *count, int kind) {
    switch (kind) {
    case 0: *count = (int)(sizeof(sizes) / sizeof(sizes[0])); return sizes;
    case 1: *count = (int)(sizeof(offsets) / sizeof(offsets[0])); return offsets;
    default: *count = (int)(sizeof(constants) / sizeof(constants[0])); return constants;
    }
}
