#include "CFuzzDriver.h"
#ifndef VHOST_NETMAP_LIBFUZZER
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int replay_file(const char *path, int (*body)(const uint8_t *, size_t)) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    size_t capacity = 1 << 16, size = 0;
    uint8_t *data = malloc(capacity);
    size_t n;
    while (data && (n = fread(data + size, 1, capacity - size, f)) > 0) {
        size += n;
        if (size == capacity) { capacity *= 2; data = realloc(data, capacity); }
    }
    fclose(f);
    if (!data) return -1;
    body(data, size);
    free(data);
    return 0;
}

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*body)(const uint8_t *, size_t)) {
    int replayed = 0;
    for (int i = 1; i < *argc; i++) {
        const char *arg = (*argv)[i];
        if (arg[0] == '-') continue;  // libFuzzer options: not for the replay driver
        struct stat st;
        if (stat(arg, &st) != 0) { perror(arg); return 1; }
        if (S_ISDIR(st.st_mode)) {
            DIR *dir = opendir(arg);
            struct dirent *e;
            while (dir && (e = readdir(dir))) {
                if (e->d_name[0] == '.') continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", arg, e->d_name);
                if (replay_file(path, body) == 0) replayed++;
            }
            if (dir) closedir(dir);
        } else if (replay_file(arg, body) == 0) {
            replayed++;
        }
    }
    printf("replayed %d input(s)\n", replayed);
    return 0;
}
#endif
