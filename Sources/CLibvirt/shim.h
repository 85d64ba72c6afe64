// libvirt's client API (Debian libvirt-dev): connections, domain events, device hot-plug.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
