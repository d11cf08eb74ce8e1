/** The data path's global counters (README "Counters"), by index into `Dataplane.counters`. */
export const COUNTER_NAMES = [
  'tun_rx_packets',
  'tun_rx_bytes',
  'tun_rx_batches',
  'tun_read_errors',
  'tx_packets',
  'tx_bytes',
  'underlay_rx_packets',
  'underlay_rx_bytes',
  'underlay_rx_batches',
  'underlay_read_errors',
  'rx_packets',
  'rx_bytes',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
