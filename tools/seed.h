/* seed: `outreachctl seed-demo`: a small, believable demo data set built from real NPI records. */
#ifndef OUTREACH_SEED_H
#define OUTREACH_SEED_H

#include <stddef.h>

#include "common/util.h"

struct db;

/* Loads the demo data set in one transaction, reading the NPI fixtures in datadir (the API answers
 * api_npi*.json, npidata_pfile_sample_rows_*.csv and nucc_taxonomy.csv). Returns 1 when demo data is
 * already present (nothing changed), 0 when loaded, -1 with err on failure (nothing changed). */
int seed_demo(struct db *db, const char *datadir, char *err, size_t errlen) MUSTCHECK;

#endif
