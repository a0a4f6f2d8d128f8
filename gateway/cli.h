/* Command-line subcommands beyond `serve`. Private to the gateway. */
#ifndef REELWAY_GATEWAY_CLI_H
#define REELWAY_GATEWAY_CLI_H

#include <stdbool.h>
#include <stdio.h>

struct rw_config_s;

/** `reelway apikey create|list|revoke|associate|dissociate ...`: the exit status. */
int rw_cli_apikey(int argc, char **argv);

/** `reelway queue send NAME --body TEXT|--file F [--delay-seconds N]`: sends a
 *  message through the admin API of a running reelway, prints its MessageId;
 *  returns the exit status. */
int rw_cli_queue(int argc, char **argv);

/** `reelway invoke NAME [--event FILE] [--async]`: returns the exit status. */
int rw_cli_invoke(int argc, char **argv);

/**
 * Fills cfg->admin_key when empty: from DATA_DIR/admin-key, or (create) a new
 * random key written there with mode 0600. Returns 0 or -1 (reason to err).
 */
int rw_admin_key_load_or_create(struct rw_config_s *cfg, bool create, FILE *err);

#endif
