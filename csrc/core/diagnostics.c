/* diagnostics.c — what the core knows about the machine and its caches. */
#include "internal.h"

const char *an_cpu_description(void) { return "unknown"; }
size_t an_workspace_bytes(void) { return 0; }
void an_release_workspace(void) {}
