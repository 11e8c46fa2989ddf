/**
 * The client against a small real cluster (clients/testdata/cluster.py:
 * three voters, one device): it keeps drawing on one chain while the leader
 * is killed mid-run, with no draw lost or doubled and every draw verified.
 * Needs GEIGER_BIN and GEIGER_DEVICE_BIN (default target/debug/…); skipped
 * without them unless GEIGER_REQUIRE_LIVE=1.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";

import { Client, type JsonObject } from "../src/index.js";
import { REPO } from "./helpers.js";

const GEIGER = process.env.GEIGER_BIN ?? resolve(REPO, "target/debug/geiger");
const DEVICE = process.env.GEIGER_DEVICE_BIN ?? resolve(REPO, "target/debug/geiger-device");
const present = existsSync(GEIGER) && existsSync(DEVICE);
if (!present && process.env.GEIGER_REQUIRE_LIVE === "1") throw new Error(`GEIGER_REQUIRE_LIVE=1 but ${GEIGER} or ${DEVICE} is missing`);

interface Running { endpoints: string[]; api_key: string; admin_token: string; pids: Record<string, number>; device_pid: number; dir: string }
let running: Running | undefined;

after(() => {
  for (const pid of [...Object.values(running?.pids ?? {}), running?.device_pid ?? 0]) {
    try {
      if (pid) process.kill(pid, "SIGTERM");
    } catch {
      // already gone (the killed leader)
    }
  }
  const dir = running?.dir;
  if (dir) setTimeout(() => rmSync(dir, { recursive: true, force: true }), 1000);
});

test("the client keeps drawing while the leader is killed", { skip: present ? false : "no binaries" }, async () => {
  const out = join(mkdtempSync(join(tmpdir(), "geiger-ts-cluster-")), "cluster.json");
  execFileSync("python3", [resolve(REPO, "clients/testdata/cluster.py"), "--geiger", GEIGER, "--device", DEVICE, "--out", out], { stdio: "inherit" });
  running = JSON.parse(readFileSync(out, "utf8")) as Running;
  rmSync(resolve(out, ".."), { recursive: true, force: true });
  const cluster = running;
  const client = new Client(cluster.endpoints, { apiKey: cluster.api_key, deadlineMs: 30000 });
  const chain = await client.createChain("killed mid-run");
  let previous = chain.id;
  const issued: string[] = [];
  let killed: string | undefined;
  for (let n = 0; n < 40; n++) {
    if (n === 15) {
      for (const e of cluster.endpoints) {
        try {
          const status = (await (await fetch(`${e}/v1/cluster/status`, { headers: { authorization: `Bearer ${cluster.admin_token}` } })).json()) as { leader?: number };
          if (status.leader) {
            killed = String(status.leader);
            break;
          }
        } catch {
          // try the next node
        }
      }
      assert.ok(killed && cluster.pids[killed]);
      process.kill(cluster.pids[killed]!, "SIGKILL");
    }
    const draw = await client.draw(previous, `round ${n}`, { kind: "integers", min: 1, max: 6, count: 1 });
    issued.push(draw.id);
    previous = draw.id;
  }
  const survivors = cluster.endpoints.filter((_e, n) => String(n + 1) !== killed);
  const drawn: string[] = [];
  for await (const d of new Client(survivors, { deadlineMs: 30000 }).iterChain(chain.id)) drawn.push(String((d.draw as JsonObject).id));
  assert.deepEqual(drawn, issued);
});
