/* The `reelway` binary: subcommands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "version") == 0) {
        printf("reelway %s\n", REELWAY_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: reelway version\n");
    return 2;
}
