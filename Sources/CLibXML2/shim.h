// libxml2 (a dependency of libvirt itself): reads the domain XML libvirt hands out.
#include <libxml/parser.h>
#include <libxml/tree.h>

// xmlFree is a global function pointer, which Swift 6 sees as shared mutable state.
static inline void cxml_free(void *p) { xmlFree(p); }
