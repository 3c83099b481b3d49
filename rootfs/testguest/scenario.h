/* A scenario is one named test the host asks for with `ember.test=name,...`. It returns 1
 * to pass, or 0 with *reason set. Add one by writing its function and listing it in
 * scenarios.c. */
#pragma once

#include "boot_info.h"

struct scenario {
  const char *name;
  int (*run)(const struct boot_info *boot, const char **reason);
};

/* The table of scenarios, ended by an entry with a null name. */
extern const struct scenario kScenarios[];

/* Scenarios defined in their own files (blk_scenarios.c, counter_scenario.c, ...). */
int blk_scenario(const struct boot_info *boot, const char **reason);
int blk_ro_scenario(const struct boot_info *boot, const char **reason);
int blk_reset_scenario(const struct boot_info *boot, const char **reason);
int counter_scenario(const struct boot_info *boot, const char **reason);
int vsock_scenario(const struct boot_info *boot, const char **reason);
int vsock_reset_scenario(const struct boot_info *boot, const char **reason);
int agent_scenario(const struct boot_info *boot, const char **reason);
int net_scenario(const struct boot_info *boot, const char **reason);
int touch_scenario(const struct boot_info *boot, const char **reason);
/* Hostile guests (hostile.h): each does what a broken or malicious driver might. */
int blk_flood_scenario(const struct boot_info *boot, const char **reason);
int vsock_tiny_rx_scenario(const struct boot_info *boot, const char **reason);
int vsock_req_churn_scenario(const struct boot_info *boot, const char **reason);
int features_retry_scenario(const struct boot_info *boot, const char **reason);
int serial_flood_scenario(const struct boot_info *boot, const char **reason);
int status_order_scenario(const struct boot_info *boot, const char **reason);
/* Every attack of attack.h on one device each (attack_targets.c), and a vsock peer that
 * grants no credit (vsock_credit_scenario.c). */
int blk_attacks_scenario(const struct boot_info *boot, const char **reason);
int net_attacks_scenario(const struct boot_info *boot, const char **reason);
int vsock_attacks_scenario(const struct boot_info *boot, const char **reason);
int vsock_no_credit_scenario(const struct boot_info *boot, const char **reason);
