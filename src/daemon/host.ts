/**
 * What the host lets ipipd do, asked while it starts (src/daemon/lifecycle.ts): `probeUdpL4`,
 * whether the TUN takes UDP super-packets (step 2's offload probe), and `needsCap`, which
 * capability a refused system call lacked, for the error message.
 */
import { readFileSync } from 'node:fs';
import { native } from '../tun/native.js';
import { IpipdError, errnoName } from './errors.js';

/**
 * UDP segmentation offload on the TUN `fd` (Linux 6.2+): TUNSETOFFLOAD with TUN_F_USO4|USO6 on
 * top of TSO (EINVAL on older kernels, as wireguard-go probes it). With it the kernel takes
 * UDP_L4 super-packets written to the TUN (ipipd's UDP GRO) and may hand ipipd UDP super-packets
 * from sockets that send with UDP_SEGMENT (cut into datagrams before encapsulation). Returns
 * whether it is on; any failure but EINVAL is a setup error.
 */
export function probeUdpL4(fd: number, name: string): boolean {
  try {
    native.setTunOffload(fd, native.TUN_F_CSUM | native.TUN_F_TSO4 | native.TUN_F_USO4 | native.TUN_F_USO6);
  } catch (err) {
    if (errnoName(err) === 'EINVAL') return false;
    throw new IpipdError('ERR_TUN_SETUP', `cannot set offloads on TUN ${name}: ${errnoName(err) ?? err}`, { cause: err });
  }
  return true;
}

/**
 * For an EPERM/EACCES: which capability this process lacks, read from its effective set
 * (/proc/self/status CapEff; CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13), so that a daemon
 * given only one of the two is told the missing one by name.
 */
export function needsCap(err: unknown, cap: 'CAP_NET_ADMIN' | 'CAP_NET_RAW'): string {
  const e = errnoName(err);
  if (e !== 'EPERM' && e !== 'EACCES') return '';
  const bit = cap === 'CAP_NET_ADMIN' ? 12n : 13n;
  try {
    const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    if (eff !== undefined && ((BigInt(`0x${eff}`) >> bit) & 1n) === 0n) return ` (${cap} is missing: run as root, or grant it, e.g. AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)`;
  } catch {
    // no /proc: say what is needed without knowing what is missing
  }
  return ` (needs root or ${cap})`;
}
