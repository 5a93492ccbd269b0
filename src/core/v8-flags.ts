/**
 * @module v8-flags: the V8 settings a Portcullis process runs with, set as it starts: main.ts imports this module
 * first, so they are in force before any other module allocates (a forked worker runs main.ts too).
 *
 * `--no-allocation-site-pretenuring`: V8 watches each object literal's allocation site, and once ≥85% of a site's
 * objects outlive a young-generation GC (a scavenge) it allocates that site's objects in the old generation from then
 * on. A proxy's per-request objects only look long-lived when a scavenge catches many in flight, and once a site is
 * pretenured its dead objects sit in the old generation until the next full GC while still pointing at the young
 * objects written into them after they were made. A scavenge cannot tell a dead old object from a live one, so it
 * keeps those young objects too; they are promoted, their own sites cross 85%, and the process stays in that state.
 * Measured under W3 (h2load, 10 connections x 10 streams, defaults), `--trace-gc-nvp`: 10-14 MB of the 42-56 MB
 * allocated between two scavenges kept and promoted each time, 20-32 ms a pause; with this flag and the HTTP/2
 * stream tables of id-table.ts, 0.4-0.6 MB and 4-7 ms (both are needed: either alone leaves the 10-14 MB), and the
 * pause time of a run halved (≈700 → ≈350 ms over 8 s). It costs a long-lived object one or two more copies
 * (a config, a certificate table, made once per generation), which is nothing beside that.
 *
 * V8 reads this flag whenever it weighs a site, so setting it at run time (v8.setFlagsFromString, which Node allows
 * after start) works; test/core/v8-flags.test.ts checks that no site is pretenured once this module has run.
 */
import { setFlagsFromString } from "node:v8"

setFlagsFromString("--no-allocation-site-pretenuring")
