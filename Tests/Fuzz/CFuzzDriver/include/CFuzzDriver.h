#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (libclang_rt.fuzzer_no_main) when the fuzz script links it; otherwise this
/// target's replay driver, which runs `body` once over each file (or each file of each directory)
/// named on the command line: the corpus and crash files replay as regression tests in any build.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*body)(const uint8_t *data, size_t size));
