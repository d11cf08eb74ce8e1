import { describe, expect, test } from 'vitest';
import { MAX_QUEUES, describeConfig, parseConfig, validateConfig, formatPath, type Config } from '../../src/daemon/config.js';
import { IpipdError } from '../../src/daemon/errors.js';

const GOOD = `
tun:
  name: ipip0
  address: 198.51.100.0/32
underlay:
  address: 192.0.2.1
peers:
  - name: h2
    endpoint: 192.0.2.2
    prefixes: [203.0.113.0/25]
`;

/** The error a config gives, with its problems one per line. */
function problems(text: string): string[] {
  try {
    parseConfig(text, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(IpipdError);
    const e = err as IpipdError;
    expect(e.message.startsWith('test.yaml: ')).toBe(true);
    return e.message.split('\n').slice(1).map((l) => l.trim());
  }
  throw new Error('expected the config to be rejected');
}

function code(text: string): string {
  try {
    parseConfig(text, 'test.yaml');
  } catch (err) {
    return (err as IpipdError).code;
  }
  return 'none';
}

describe('config: valid input', () => {
  test('defaults are filled in and addresses become int32 values', () => {
    const c = parseConfig(GOOD);
    expect(c.tun).toEqual({ name: 'ipip0', address: { text: '198.51.100.0/32', addr: (198 << 24) | (51 << 16) | (100 << 8), len: 32 }, txqueuelen: 1000 });
    expect(c.tun.mtu).toBeUndefined();
    expect(c.underlay.address).toEqual({ text: '192.0.2.1', value: (192 << 24) | (2 << 8) | 1 });
    expect(c.underlay.address.value).toBeLessThan(0); // 192.x is negative as a signed int32
    expect(c.encap).toEqual({ ttl: 64, tos: 'inherit', df: 'inherit', mode: 'always' });
    expect(c.routes).toEqual({ install: true, table: 254, source: 'config', own_blocks: [] });
    expect(c.io).toEqual({ batch: 64, socket_buffer: 4 << 20, offload: true, queues: 1 });
    expect(c.control.socket).toMatch(/^\/run\/ipipd\/ipip0\.\d+\.sock$/); // the network namespace's inode
    expect(c.log).toEqual({ level: 'info', stats_interval: 60 });
    expect(c.icmp).toEqual({ rate: 1000, burst: 50 });
    expect(c.underlay.pmtu_expires).toBe(600);
    expect(c.peers[0]!.mtu).toBeUndefined();
    expect(c.peers[0]!.prefixes[0]).toEqual({ text: '203.0.113.0/25', addr: (203 << 24) | (113 << 8), len: 25 });
  });

  test('the result is deeply frozen', () => {
    const c = parseConfig(GOOD) as unknown as { peers: { prefixes: unknown[] }[]; tun: { name: string } };
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.peers[0]!.prefixes)).toBe(true);
    expect(() => {
      c.tun.name = 'x';
    }).toThrow(TypeError);
  });

  test('every option can be set', () => {
    const c: Config = parseConfig(`
tun: { name: t1, address: 198.51.100.1/25, mtu: 1400, txqueuelen: 5000 }
underlay: { address: 192.0.2.1, device: ul0 }
encap: { ttl: inherit, tos: 184, df: always }
peers:
  - { name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25, 203.0.113.128/26] }
  - { name: b, endpoint: 192.0.2.3, prefixes: [198.51.100.128/25] }
routes: { install: false, table: 100, metric: 20 }
io: { batch: 8, socket_buffer: 65536, offload: true, queues: 3 }
control: { socket: false }
log: { level: debug, stats_interval: 0 }
`);
    expect(c.tun.mtu).toBe(1400);
    expect(c.encap).toEqual({ ttl: 'inherit', tos: 184, df: 'always', mode: 'always' });
    expect(c.control.socket).toBe(false);
    expect(c.routes.metric).toBe(20);
    expect(c.io).toEqual({ batch: 8, socket_buffer: 65536, offload: true, queues: 3 });
    expect(c.peers.map((p) => p.name)).toEqual(['a', 'b']);
  });
});

describe('config: io.offload', () => {
  test('is on by default and described either way', () => {
    expect(describeConfig(parseConfig(GOOD)).find((l) => l.startsWith('io '))).toMatch(/offload on/);
    const off = parseConfig(GOOD + 'io: { offload: false }\n');
    expect(off.io.offload).toBe(false);
    expect(describeConfig(off)).toContain('io batch 64 queues 1 socket_buffer 4194304 offload off');
  });
});

describe('config: io.queues', () => {
  test('MAX_QUEUES is 8, the schema\'s upper bound', () => {
    expect(MAX_QUEUES).toBe(8);
  });

  // 1, 2 and the maximum are taken as given and printed on the io line.
  test.each([1, 2, 8])('io.queues %i is accepted and described', (n) => {
    const c = parseConfig(GOOD + `io: { queues: ${n} }\n`);
    expect(c.io.queues).toBe(n);
    // The other io fields keep their defaults.
    expect(c.io).toEqual({ batch: 64, socket_buffer: 4 << 20, offload: true, queues: n });
    expect(describeConfig(c).find((l) => l.startsWith('io '))).toMatch(new RegExp(`^io batch 64 queues ${n} socket_buffer 4194304 offload on `));
  });

  test('the block form is read the same as the flow form', () => {
    expect(parseConfig(GOOD + 'io:\n  queues: 4\n').io.queues).toBe(4);
  });

  // Below the range, above it, not an integer, and a number given as a string (no coercion):
  // each is ERR_CONFIG_INVALID with one problem line at the path io.queues, and only that one.
  // The problem text also says which rule was broken (the bound, integer, number).
  test.each([
    ['0', '0', />= ?1\b/],
    ['9 (MAX_QUEUES + 1)', '9', /<= ?8\b/],
    ['1.5', '1.5', /\bint/],
    ['"2" (a string)', '"2"', /string/],
    ['-1', '-1', />= ?1\b/],
  ])('io.queues %s is rejected at its path', (_name, value, why) => {
    const text = GOOD + `io: { queues: ${value} }\n`;
    expect(code(text)).toBe('ERR_CONFIG_INVALID');
    const p = problems(text);
    expect(p, p.join('\n')).toHaveLength(1);
    expect(p[0]).toMatch(/^io\.queues: /);
    expect(p[0]).toMatch(why);
  });

  test('a bad io.queues is reported together with other problems', () => {
    const p = problems(GOOD + 'io: { queues: 0, batch: 0 }\n');
    expect(p.filter((l) => l.startsWith('io.queues: '))).toHaveLength(1);
    expect(p.filter((l) => l.startsWith('io.batch: '))).toHaveLength(1);
  });
});

describe('config: every bad field names its path', () => {
  const cases: [string, string, RegExp][] = [
    ['tun.name too long', GOOD.replace('name: ipip0', 'name: abcdefghijklmnop'), /^tun\.name: /],
    ['tun.address not a prefix', GOOD.replace('198.51.100.0/32', '198.51.100.0'), /^tun\.address: expected ADDRESS\/LENGTH/],
    ['tun.mtu too small', GOOD.replace('  name: ipip0', '  name: ipip0\n  mtu: 100'), /^tun\.mtu: /],
    ['tun.txqueuelen not an int', GOOD.replace('  name: ipip0', '  name: ipip0\n  txqueuelen: 1.5'), /^tun\.txqueuelen: /],
    ['underlay.address bad', GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.300'), /^underlay\.address: not an IPv4 address/],
    ['underlay.address leading zero', GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.01'), /^underlay\.address: /],
    ['underlay missing', GOOD.replace('underlay:\n  address: 192.0.2.1\n', ''), /^underlay: /],
    ['encap.ttl 0', GOOD + 'encap: { ttl: 0 }\n', /^encap\.ttl: /],
    ['encap.tos 256', GOOD + 'encap: { tos: 256 }\n', /^encap\.tos: /],
    ['encap.df bad', GOOD + 'encap: { df: sometimes }\n', /^encap\.df: /],
    ['peers empty', GOOD.replace(/peers:[\s\S]*$/, 'peers: []\n'), /^peers: /],
    ['peer endpoint bad', GOOD.replace('endpoint: 192.0.2.2', 'endpoint: nowhere'), /^peers\[0\]\.endpoint: not an IPv4 address/],
    ['peer prefix host bits', GOOD.replace('203.0.113.0/25', '203.0.113.1/25'), /^peers\[0\]\.prefixes\[0\]: host bits set/],
    ['peer prefix length', GOOD.replace('203.0.113.0/25', '203.0.113.0/33'), /^peers\[0\]\.prefixes\[0\]: /],
    ['peer prefixes empty', GOOD.replace('[203.0.113.0/25]', '[]'), /^peers\[0\]\.prefixes: /],
    ['peer name bad', GOOD.replace('name: h2', 'name: "h 2"'), /^peers\[0\]\.name: /],
    ['io.batch 0', GOOD + 'io: { batch: 0 }\n', /^io\.batch: /],
    ['io.queues 9', GOOD + 'io: { queues: 9 }\n', /^io\.queues: /],
    ['io.offload not a boolean', GOOD + 'io: { offload: yes please }\n', /^io\.offload: /],
    ['peer mtu too small', GOOD.replace('    prefixes:', '    mtu: 60\n    prefixes:'), /^peers\[0\]\.mtu: /],
    ['icmp.rate 0', GOOD + 'icmp: { rate: 0 }\n', /^icmp\.rate: /],
    ['underlay.pmtu_expires negative', GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.1\n  pmtu_expires: -1'), /^underlay\.pmtu_expires: /],
    ['io.batch too large', GOOD + 'io: { batch: 4096 }\n', /^io\.batch: /],
    ['log.level bad', GOOD + 'log: { level: loud }\n', /^log\.level: /],
    ['routes.table 0', GOOD + 'routes: { table: 0 }\n', /^routes\.table: /],
    ['control.socket empty', GOOD + 'control: { socket: "" }\n', /^control\.socket: /],
  ];
  test.each(cases)('%s', (_name, text, re) => {
    const p = problems(text);
    expect(p.some((l) => re.test(l)), p.join('\n')).toBe(true);
  });

  test('unknown keys are rejected at every level, with their path', () => {
    expect(problems(GOOD + 'extra: 1\n').some((l) => /^\(top level\): .*extra/.test(l))).toBe(true);
    expect(problems(GOOD.replace('  name: ipip0', '  name: ipip0\n  mtuu: 1400')).some((l) => /^tun: .*mtuu/.test(l))).toBe(true);
    expect(problems(GOOD.replace('    endpoint:', '    via: x\n    endpoint:')).some((l) => /^peers\[0\]: .*via/.test(l))).toBe(true);
  });

  test('all problems are reported in one error', () => {
    const p = problems(`
tun: { name: "bad name!", mtu: 10 }
underlay: { address: 1.2.3 }
peers: [{ name: a, endpoint: x, prefixes: [1.2.3.4/8] }]
`);
    expect(p.length).toBeGreaterThanOrEqual(5);
    for (const path of ['tun.name', 'tun.mtu', 'underlay.address', 'peers[0].endpoint', 'peers[0].prefixes[0]']) {
      expect(p.some((l) => l.startsWith(`${path}: `)), `${path} in:\n${p.join('\n')}`).toBe(true);
    }
  });
});

describe('config: rules across fields', () => {
  const two = (a: string, b: string): string => `
underlay: { address: 192.0.2.1 }
peers:
  - ${a}
  - ${b}
`;
  test('duplicate peer name, endpoint and prefix', () => {
    const p = problems(two('{ name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }', '{ name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }'));
    expect(p.some((l) => l.startsWith('peers[1].name: duplicate peer name'))).toBe(true);
    expect(p.some((l) => l.startsWith("peers[1].endpoint: endpoint 192.0.2.2 is also peers[0]'s"))).toBe(true);
    expect(p.some((l) => l.startsWith('peers[1].prefixes[0]: prefix 203.0.113.0/25 is already given at peers[0].prefixes[0]'))).toBe(true);
  });
  test('a peer endpoint equal to our own address', () => {
    const p = problems(two('{ name: a, endpoint: 192.0.2.1, prefixes: [203.0.113.0/25] }', '{ name: b, endpoint: 192.0.2.3, prefixes: [198.51.100.0/25] }'));
    expect(p.some((l) => l.startsWith("peers[0].endpoint: endpoint 192.0.2.1 is this host's own underlay.address"))).toBe(true);
  });
  test('prefixes that would route underlay addresses into the tunnel (RFC 2003 §3.2)', () => {
    const p = problems(two('{ name: a, endpoint: 192.0.2.2, prefixes: [192.0.2.0/24] }', '{ name: b, endpoint: 192.0.2.3, prefixes: [0.0.0.0/0] }'));
    expect(p.some((l) => /^peers\[0\]\.prefixes\[0\]: .*underlay address 192\.0\.2\.1: the tunnel would loop/.test(l))).toBe(true);
    expect(p.some((l) => /^peers\[1\]\.prefixes\[0\]: .*endpoint 192\.0\.2\.2: the tunnel would loop/.test(l))).toBe(true);
  });
  test('a fixed TOS with ECN bits set', () => {
    const p = problems(GOOD + 'encap: { tos: 185 }\n');
    expect(p).toContain('encap.tos: the low 2 bits of 185 are ECN, which always follows the inner packet (RFC 6040): give a DSCP byte, a multiple of 4 (e.g. 184)');
  });
  test('the TUN address inside a peer prefix', () => {
    const p = problems(`
tun: { address: 203.0.113.5/32 }
underlay: { address: 192.0.2.1 }
peers: [{ name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }]
`);
    expect(p.some((l) => /^peers\[0\]\.prefixes\[0\]: .*TUN's own address/.test(l))).toBe(true);
  });
  test('the rules across fields are reported together with a schema error elsewhere (one message, every problem)', () => {
    // No peers, and a bad TTL.
    expect(problems('underlay: { address: 192.0.2.1 }\nencap: { ttl: 0 }\n')).toEqual([
      expect.stringMatching(/^encap\.ttl: /),
      'peers: at least one peer is needed (or routes.source: kernel, which learns them from the routing table)',
    ]);
    // An own block overlapping a peer's prefix, and a bad TTL.
    const p = problems(GOOD + 'routes: { own_blocks: [203.0.113.0/26] }\nencap: { ttl: 0 }\n');
    expect(p[0]).toMatch(/^encap\.ttl: /);
    expect(p).toContain('routes.own_blocks[0]: 203.0.113.0/26 overlaps peers[0].prefixes[0] 203.0.113.0/25 (peer h2): a block is either this host\'s or a peer\'s');
    // routes.source: kernel without allowed_endpoints, and a bad peer: both, with the peer's path.
    const k = problems('underlay: { address: 192.0.2.1 }\nroutes: { source: kernel }\npeers: [{ name: a, endpoint: nope, prefixes: [203.0.113.0/25] }]\n');
    expect(k.some((l) => l.startsWith('peers[0].endpoint: '))).toBe(true);
    expect(k.some((l) => l.startsWith('underlay.allowed_endpoints: required with routes.source: kernel'))).toBe(true);
  });
  test('peers that are not a list: the schema says so, and "at least one peer" is not said besides', () => {
    const p = problems('underlay: { address: 192.0.2.1 }\npeers: nope\n');
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^peers: /);
  });
});

describe('config: file-level errors', () => {
  test('YAML syntax error gives ERR_CONFIG_PARSE with a position', () => {
    const parseError = (text: string): IpipdError => {
      try {
        parseConfig(text, 'bad.yaml');
      } catch (err) {
        expect(err).toBeInstanceOf(IpipdError);
        return err as IpipdError;
      }
      throw new Error('expected the config to be rejected');
    };
    const unclosed = parseError('tun: [unclosed\n');
    expect(unclosed.code).toBe('ERR_CONFIG_PARSE');
    expect(unclosed.message).toMatch(/^bad\.yaml: .* at line 2, column 1:/);
    const dup = parseError('tun:\n  name: a\n  name: b\n');
    expect(dup.code).toBe('ERR_CONFIG_PARSE');
    expect(dup.message).toMatch(/^bad\.yaml: Map keys must be unique at line 3, column 3:/);
  });
  test('an empty document is invalid, not a crash', () => {
    expect(code('')).toBe('ERR_CONFIG_INVALID');
  });
  test('validateConfig takes parsed objects too; formatPath renders zod paths', () => {
    expect(() => validateConfig(42)).toThrow(IpipdError);
    expect(formatPath(['peers', 1, 'prefixes', 0])).toBe('peers[1].prefixes[0]');
    expect(formatPath([])).toBe('(top level)');
  });
});

describe('config: underlay.send', () => {
  const underlayLine = (c: Config): string | undefined => describeConfig(c).find((l) => l.startsWith('underlay '));

  test("defaults to 'raw', described as the raw socket", () => {
    const c = parseConfig(GOOD);
    expect(c.underlay.send).toBe('raw');
    expect(underlayLine(c)).toMatch(/sent through the raw socket$/);
    expect(underlayLine(c)).not.toMatch(/AF_PACKET/);
  });

  test("'raw' given explicitly is the same as the default", () => {
    const c = parseConfig(GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.1\n  send: raw'));
    expect(c.underlay.send).toBe('raw');
    expect(underlayLine(c)).toBe(underlayLine(parseConfig(GOOD)));
  });

  test("'packet' is accepted with io.queues 1 and described as AF_PACKET", () => {
    const c = parseConfig(GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.1\n  send: packet') + 'io: { queues: 1 }\n');
    expect(c.underlay.send).toBe('packet');
    expect(c.io.queues).toBe(1);
    expect(underlayLine(c)).toMatch(/sent through AF_PACKET to each peer's next hop$/);
    expect(underlayLine(c)).not.toMatch(/raw socket/);
    // The other underlay fields keep their defaults and their text.
    expect(underlayLine(c)).toMatch(/^underlay 192\.0\.2\.1, learned path MTUs kept 600s, /);
  });

  // Any other value (another word, a different case, a boolean) is ERR_CONFIG_INVALID with one
  // problem line at the path underlay.send.
  test.each(['udp', 'PACKET', 'true', '""'])('underlay.send %s is rejected at its path', (value) => {
    const text = GOOD.replace('address: 192.0.2.1', `address: 192.0.2.1\n  send: ${value}`);
    expect(code(text)).toBe('ERR_CONFIG_INVALID');
    const p = problems(text);
    expect(p, p.join('\n')).toHaveLength(1);
    expect(p[0]).toMatch(/^underlay\.send: /);
  });

  test.each([2, 8])("'packet' with io.queues %i is accepted (each queue gets its own AF_PACKET socket)", (n) => {
    const c = parseConfig(GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.1\n  send: packet') + `io: { queues: ${n} }\n`);
    expect(c.underlay.send).toBe('packet');
    expect(c.io.queues).toBe(n);
  });

  test("'raw' with several queues is fine", () => {
    const c = parseConfig(GOOD.replace('address: 192.0.2.1', 'address: 192.0.2.1\n  send: raw') + 'io: { queues: 2 }\n');
    expect(c.underlay.send).toBe('raw');
    expect(c.io.queues).toBe(2);
  });
});
