/**
 * packaging/ipipd.service: it says what the README's "Running as a service" promises, and, where
 * `systemd-analyze` is installed, `systemd-analyze verify` accepts it (with the repository's
 * bin/ipipd.js standing in for /usr/local/bin/ipipd, which verify wants to exist).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ROOT } from '../../tools/netns/namespaces.js';
import { skipWithout } from '../helpers/skip.js';

const unit = readFileSync(join(ROOT, 'packaging', 'ipipd.service'), 'utf8');
const dir = mkdtempSync(join(tmpdir(), 'ipipd-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every `Key=value` of the unit, comments left out. */
function settings(): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of unit.split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (kv) m.set(kv[1]!, kv[2]!);
  }
  return m;
}

describe('packaging/ipipd.service', () => {
  test('notify type, reload by SIGHUP, restart on failure, two capabilities and a sandbox', () => {
    const s = settings();
    expect(s.get('Type')).toBe('notify');
    expect(s.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(s.get('Restart')).toBe('on-failure');
    expect(s.get('RestartPreventExitStatus')).toBe('2'); // a bad config: restarting cannot help
    expect(s.get('CapabilityBoundingSet')).toBe('CAP_NET_ADMIN CAP_NET_RAW');
    expect(s.get('AmbientCapabilities')).toBe('CAP_NET_ADMIN CAP_NET_RAW');
    expect(s.get('NoNewPrivileges')).toBe('yes');
    expect(s.get('ProtectSystem')).toBe('strict');
    expect(s.get('RuntimeDirectory')).toBe('ipipd');
    expect(s.get('RuntimeDirectoryPreserve')).toBe('restart'); // the state file survives a crash
    expect(s.get('DeviceAllow')).toBe('/dev/net/tun rw');
    expect(s.has('ProtectKernelTunables')).toBe(false); // ipipd writes its TUN's net.* sysctls
    expect(s.has('MemoryDenyWriteExecute')).toBe(false); // V8 compiles code
    expect(s.get('ExecStart')).toBe('/usr/local/bin/ipipd run --config /etc/ipipd/ipipd.yaml');
  });

  // systemd's package is in scripts/install-deps.sh's test group: with IPIPD_REQUIRE_NETNS=1 (CI) a missing one fails.
  test.skipIf(skipWithout('systemd-analyze'))('systemd-analyze verify accepts it', () => {
    const file = join(dir, 'ipipd.service');
    writeFileSync(file, unit.replaceAll('/usr/local/bin/ipipd', join(ROOT, 'bin', 'ipipd.js')).replace(/^Documentation=.*$/m, ''));
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });
});
