// ipipd native addon: the only place ipipd makes syscalls.
//
// C makes syscalls; JavaScript owns memory and logic (STYLE rule 3). Every buffer used here
// (packet slab, offsets, lengths, destinations, results) is a JS typed array; this file only
// holds raw pointers into arrays it keeps strong references to.
//
// Flow, in the order the functions appear:
//   - errno names and Error construction (`code` = errno symbol, `errno` > 0, `syscall`);
//   - argument checks (TypeError for a wrong type, RangeError for a wrong value);
//   - openTun: open /dev/net/tun, TUNSETIFF with IFF_TUN | IFF_NO_PI (and, on request,
//     IFF_VNET_HDR with TUNSETVNETHDRSZ and TUNSETOFFLOAD: the offload mode, where every read and
//     write starts with a 10-byte struct virtio_net_hdr that JavaScript parses and writes);
//     With `multiQueue` (IFF_MULTI_QUEUE) the same name may be opened again: one fd per queue,
//     each read by its own thread (config io.queues);
//   - openRaw: raw AF_INET socket of protocol 4 (RFC 2003 IP-in-IP) with IP_HDRINCL, buffer
//     sizes, bind to the local underlay address; on request, a classic BPF filter given as
//     bytes (JavaScript builds the queue steering program: src/tun/steering.ts);
//   - setThreadName (a queue worker names its thread), closeFd;
//   - writeTun: one write(2) per packet;
//   - sendRaw: sendmmsg(2) in chunks, skipping and counting packets that fail; sendPacket: the
//     same on an AF_PACKET socket to each packet's next-hop MAC (underlay.send: packet; which
//     packets take that way and which sendRaw's is JavaScript's choice);
//   - rtnetlink: openNetlink (a NETLINK_ROUTE socket bound to a kernel-chosen port),
//     netlinkJoin (a multicast group), netlinkSend (one request to the kernel); the messages
//     themselves are built and parsed in JavaScript (src/tun/rtnetlink.ts);
//   - Reader: a uv_poll_t on the Node event loop that, on each readable wake-up, drains the fd
//     into a pool of fixed slots (read(2) per packet for a TUN, recvmmsg(2) for the raw, UDP and
//     netlink sockets) and calls onBatch(n) synchronously through MakeCallback; a TUN Reader may
//     instead pack its packets one after the other (packed mode: each packet takes only the
//     64-byte-aligned bytes it needs, so a slab of a few slots' size holds a whole batch of small
//     packets and a batch of super-packets stops when the slab is full, instead of 64 KiB slots
//     per packet);
//   - module registration.
//
// Reader lifecycle (STYLE rule 13):
//
//   created --start()--> started --stop()--> created        (start/stop may repeat)
//      |                    |
//      |                    +--uv_poll error status--> created   (libuv already stopped it)
//      +----close() / GC / environment teardown----> closed    (uv_close; references dropped)
//
// While started, the Reader pins its JS object (and through it slab, lens and callbacks) and the
// active uv handle keeps the loop alive; in every other state nothing keeps the loop alive. A
// netlink Reader never keeps the loop alive (its handle is unref'd, as the sockets of the npm
// package it replaces were): a request in flight does, through its timeout timer.

#include <napi.h>
#include <v8.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Errors

struct ErrnoEntry {
  int err;
  const char* name;
};

// The errno values the daemon may see, named without depending on libc extensions. Anything
// else falls back to strerrorname_np (glibc >= 2.32) and then to "E<number>".
const ErrnoEntry kErrnoNames[] = {
    {EPERM, "EPERM"},
    {ENOENT, "ENOENT"},
    {ESRCH, "ESRCH"},
    {EINTR, "EINTR"},
    {EIO, "EIO"},
    {ENXIO, "ENXIO"},
    {E2BIG, "E2BIG"},
    {EBADF, "EBADF"},
    {EAGAIN, "EAGAIN"},
    {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},
    {EFAULT, "EFAULT"},
    {EBUSY, "EBUSY"},
    {EEXIST, "EEXIST"},
    {ENODEV, "ENODEV"},
    {ENOTDIR, "ENOTDIR"},
    {EINVAL, "EINVAL"},
    {ENFILE, "ENFILE"},
    {EMFILE, "EMFILE"},
    {ENOTTY, "ENOTTY"},
    {ENOSPC, "ENOSPC"},
    {EPIPE, "EPIPE"},
    {ERANGE, "ERANGE"},
    {ENAMETOOLONG, "ENAMETOOLONG"},
    {ENOSYS, "ENOSYS"},
    {EBADFD, "EBADFD"},
    {ENOTSOCK, "ENOTSOCK"},
    {EDESTADDRREQ, "EDESTADDRREQ"},
    {EMSGSIZE, "EMSGSIZE"},
    {EPROTOTYPE, "EPROTOTYPE"},
    {ENOPROTOOPT, "ENOPROTOOPT"},
    {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
    {EOPNOTSUPP, "EOPNOTSUPP"},
    {EAFNOSUPPORT, "EAFNOSUPPORT"},
    {EADDRINUSE, "EADDRINUSE"},
    {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
    {ENETDOWN, "ENETDOWN"},
    {ENETUNREACH, "ENETUNREACH"},
    {ENOBUFS, "ENOBUFS"},
    {ENOTCONN, "ENOTCONN"},
    {ETIMEDOUT, "ETIMEDOUT"},
    {ECONNREFUSED, "ECONNREFUSED"},
    {EHOSTDOWN, "EHOSTDOWN"},
    {EHOSTUNREACH, "EHOSTUNREACH"},
    {ENOTSUP, "ENOTSUP"},
};

std::string ErrnoName(int err) {
  for (const ErrnoEntry& e : kErrnoNames) {
    if (e.err == err) return e.name;
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#endif
  return "E" + std::to_string(err);
}

std::string ErrnoText(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  // Thread-safe, unlike strerror(3): the addon may be loaded by several worker threads.
  const char* text = strerrordesc_np(err);
  if (text != nullptr) return text;
  return "Unknown error " + std::to_string(err);
#else
  char buf[128];
  return strerror_r(err, buf, sizeof buf);
#endif
}

// An Error shaped like Node's system errors: message "<what>: <CODE> (<description>)", plus
// `code` (errno symbol), `errno` (positive errno value) and `syscall`.
Napi::Error MakeSysError(Napi::Env env, int err, const char* syscall, const std::string& what,
                         const std::string& code, const std::string& text) {
  Napi::Error e = Napi::Error::New(env, what + ": " + code + " (" + text + ")");
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& what) {
  return MakeSysError(env, err, syscall, what, ErrnoName(err), ErrnoText(err));
}

// libuv reports errors as negative errno values with its own names (same symbols on Linux).
Napi::Error UvError(Napi::Env env, int status, const char* syscall, const std::string& what) {
  return MakeSysError(env, -status, syscall, what, uv_err_name(status), uv_strerror(status));
}

// The way out of a socket being opened: the error of the syscall that just failed (errno read
// first), with `fd` closed.
Napi::Error CloseAndFail(Napi::Env env, int fd, const char* syscall, const std::string& what) {
  int err = errno;
  close(fd);
  return ErrnoError(env, err, syscall, what);
}

std::string Ipv4Text(int32_t addr) {
  struct in_addr in;
  in.s_addr = htonl(static_cast<uint32_t>(addr));
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &in, buf, sizeof buf);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Argument checks

// An integer in [lo, hi]; TypeError if not a number, RangeError if out of range or fractional.
int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi) {
  Napi::Env env = info.Env();
  if (!info[i].IsNumber()) {
    throw Napi::TypeError::New(env, std::string(name) + " must be a number");
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || std::floor(d) != d) {
    throw Napi::RangeError::New(env, std::string(name) + " must be an integer in [" +
                                         std::to_string(static_cast<int64_t>(lo)) + ", " +
                                         std::to_string(static_cast<int64_t>(hi)) + "]");
  }
  return static_cast<int32_t>(d);
}

// An IPv4 address as a 32-bit integer in network byte order: accepts both the signed form
// (buf.readInt32BE) and the unsigned one (>>> 0), returns the signed form.
int32_t ArgAddr(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  if (!info[i].IsNumber()) {
    throw Napi::TypeError::New(env, std::string(name) + " must be a number");
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= -2147483648.0 && d <= 4294967295.0) || std::floor(d) != d) {
    throw Napi::RangeError::New(env, std::string(name) + " must be a 32-bit integer");
  }
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(d)));
}

Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  }
  return info[i].As<Napi::Uint8Array>();
}

Napi::Int32Array ArgI32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an Int32Array");
  }
  return info[i].As<Napi::Int32Array>();
}

Napi::Function ArgFn(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a function");
  }
  return info[i].As<Napi::Function>();
}

// Both a batch count and the arrays it indexes are checked once per call, so the loops below
// can index without further checks.
void CheckCount(Napi::Env env, int32_t n, const Napi::Int32Array& a, const char* name) {
  if (static_cast<size_t>(n) > a.ElementLength()) {
    throw Napi::RangeError::New(env, std::string("n exceeds the length of ") + name);
  }
}

void CheckResult(Napi::Env env, const Napi::Int32Array& res) {
  if (res.ElementLength() < 2) {
    throw Napi::RangeError::New(env, "res must have at least 2 elements");
  }
}

// Packet i lies inside the slab. A packet that does not is a per-packet failure (EINVAL), not
// an exception: the data path never throws.
inline bool InSlab(int32_t off, int32_t len, size_t size) {
  return off >= 0 && len >= 0 && static_cast<size_t>(off) + static_cast<size_t>(len) <= size;
}

// The arguments writeTun and sendRaw share (fd, slab, offs, lens, [dsts,] n, res), checked
// once, and the per-packet accounting both report: a failed packet i gets lens[i] = -errno,
// res[0] counts the failures and res[1] keeps the last errno.
struct PacketBatch {
  int32_t fd;
  uint8_t* base;
  size_t size;
  const int32_t* off;
  int32_t* len;
  int32_t n;
  int32_t* res;
  int32_t done = 0;
  int32_t failed = 0;
  int32_t last = 0;

  // Arguments 0..3 are fd, slab, offs, lens; `nArg` is n's position, res follows it.
  PacketBatch(const Napi::CallbackInfo& info, size_t nArg) {
    Napi::Env env = info.Env();
    fd = ArgInt(info, 0, "fd", INT32_MIN, INT32_MAX);
    Napi::Uint8Array slab = ArgBytes(info, 1, "slab");
    Napi::Int32Array offs = ArgI32(info, 2, "offs");
    Napi::Int32Array lens = ArgI32(info, 3, "lens");
    n = ArgInt(info, nArg, "n", 0, INT32_MAX);
    Napi::Int32Array r = ArgI32(info, nArg + 1, "res");
    CheckCount(env, n, offs, "offs");
    CheckCount(env, n, lens, "lens");
    CheckResult(env, r);
    base = slab.Data();
    size = slab.ByteLength();
    off = offs.Data();
    len = lens.Data();
    res = r.Data();
  }

  // Packet i is inside the slab; if not, it is marked failed (EINVAL).
  bool Usable(int32_t i) {
    if (InSlab(off[i], len[i], size)) return true;
    Fail(i, EINVAL);
    return false;
  }

  void Fail(int32_t i, int err) {
    failed++;
    last = err;
    len[i] = -err;
  }

  Napi::Value Finish(Napi::Env env) {
    res[0] = failed;
    res[1] = last;
    return Napi::Number::New(env, done);
  }
};

// ---------------------------------------------------------------------------------------------
// openTun(name, options?): { fd, name }

// struct virtio_net_hdr without num_buffers (include/uapi/linux/virtio_net.h): what the kernel
// puts in front of every packet read from, and expects in front of every packet written to, a
// TUN opened with IFF_VNET_HDR.
constexpr int kVnetHdrLen = 10;
// The TUNSETOFFLOAD flags this addon accepts (the rest are unknown to older kernels or need a
// larger header).
// UDP segmentation offload (Linux 6.2); older uapi headers do not name it.
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
constexpr int32_t kTunOffloadMask =
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO | TUN_F_USO4 | TUN_F_USO6;

Napi::Value OpenTun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string what = "openTun(" + name + ")";
  // Optional options object: { vnetHdr?: boolean, offload?: TUN_F_* flags, multiQueue?: boolean }.
  bool vnetHdr = false;
  bool multiQueue = false;
  int32_t offload = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value v = o.Get("vnetHdr");
    if (!v.IsUndefined()) {
      if (!v.IsBoolean()) throw Napi::TypeError::New(env, "options.vnetHdr must be a boolean");
      vnetHdr = v.As<Napi::Boolean>().Value();
    }
    Napi::Value mq = o.Get("multiQueue");
    if (!mq.IsUndefined()) {
      if (!mq.IsBoolean()) throw Napi::TypeError::New(env, "options.multiQueue must be a boolean");
      multiQueue = mq.As<Napi::Boolean>().Value();
    }
    Napi::Value f = o.Get("offload");
    if (!f.IsUndefined()) {
      if (!f.IsNumber()) throw Napi::TypeError::New(env, "options.offload must be a number");
      double d = f.As<Napi::Number>().DoubleValue();
      if (!(d >= 0 && d <= kTunOffloadMask) || std::floor(d) != d ||
          (static_cast<int32_t>(d) & ~kTunOffloadMask) != 0) {
        throw Napi::RangeError::New(env, "options.offload must be a combination of TUN_F_* flags");
      }
      offload = static_cast<int32_t>(d);
    }
    // Without the header the kernel would hand us super-packets and partial checksums without
    // saying so.
    if (offload != 0 && !vnetHdr) {
      throw Napi::RangeError::New(env, "options.offload needs options.vnetHdr");
    }
  }
  // The kernel would silently truncate a longer name; refuse it the way dev_valid_name() would.
  if (name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) {
    throw MakeSysError(env, EINVAL, "ioctl", what + ": ioctl TUNSETIFF", "EINVAL",
                       "interface name is " + std::to_string(name.size()) +
                           " bytes, the limit is " + std::to_string(IFNAMSIZ - 1));
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", what + ": open /dev/net/tun");

  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  // Every queue of a multi-queue TUN is opened with the same flags: the kernel refuses a
  // single-queue open of a multi-queue device (EINVAL) and silently keeps the first open's
  // IFF_VNET_HDR, whatever a later one asks for.
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0) | (multiQueue ? IFF_MULTI_QUEUE : 0);
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, err, "ioctl", what + ": ioctl TUNSETIFF");
  }
  if (vnetHdr) {
    int size = kVnetHdrLen;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      int err = errno;
      close(fd);
      throw ErrnoError(env, err, "ioctl", what + ": ioctl TUNSETVNETHDRSZ");
    }
    if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(offload)) < 0) {
      int err = errno;
      close(fd);
      throw ErrnoError(env, err, "ioctl", what + ": ioctl TUNSETOFFLOAD");
    }
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ)));
  return out;
}

// ---------------------------------------------------------------------------------------------
// openRaw(localAddr, rcvbuf, sndbuf, protocol?, filter?): fd

// Set a socket buffer size, forcing past net.core.[rw]mem_max when we may (CAP_NET_ADMIN).
// A size of 0 leaves the kernel default.
int SetBufSize(int fd, int force_opt, int opt, int size) {
  if (size <= 0) return 0;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0) return 0;
  if (errno != EPERM) return -1;
  return setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

Napi::Value OpenRaw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t local = ArgAddr(info, 0, "localAddr");
  int32_t rcvbuf = ArgInt(info, 1, "rcvbuf", 0, INT32_MAX);
  int32_t sndbuf = ArgInt(info, 2, "sndbuf", 0, INT32_MAX);
  // Optional 4th argument: the IP protocol (default 4, IPIP). ipipd also reads ICMP (1) from the
  // underlay with a second socket, to learn path MTUs and relay errors (RFC 2003 §4, §5).
  int32_t protocol = info.Length() > 3 && !info[3].IsUndefined() ? ArgInt(info, 3, "protocol", 1, 255) : IPPROTO_IPIP;
  // Optional 5th argument: a classic BPF program, `struct sock_filter` entries as bytes (the
  // queue steering of io.queues > 1, built in src/tun/steering.ts), attached before the socket
  // is bound.
  struct sock_fprog filter = {0, nullptr};
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    Napi::Uint8Array prog = ArgBytes(info, 4, "filter");
    size_t len = prog.ByteLength() / sizeof(struct sock_filter);
    if (prog.ByteLength() % sizeof(struct sock_filter) != 0 || len == 0 || len > BPF_MAXINSNS) {
      throw Napi::RangeError::New(env, "filter must hold 1 to " + std::to_string(BPF_MAXINSNS) +
                                           " whole struct sock_filter entries");
    }
    filter.len = static_cast<unsigned short>(len);
    filter.filter = reinterpret_cast<struct sock_filter*>(prog.Data());
  }
  std::string what = "openRaw(" + Ipv4Text(local) + ", protocol " + std::to_string(protocol) + ")";

  int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) throw ErrnoError(env, errno, "socket", what + ": socket");

  auto fail = [&](const char* syscall, const std::string& step) {
    return CloseAndFail(env, fd, syscall, what + ": " + step);
  };
  if (filter.filter != nullptr) {
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof filter) < 0) {
      throw fail("setsockopt", "setsockopt SO_ATTACH_FILTER");
    }
    // Whatever arrived between socket() and the filter did not pass it (with queue steering,
    // it is every queue's): drop it, so that each datagram is read by one queue only.
    uint8_t scratch[64];
    while (recv(fd, scratch, sizeof scratch, MSG_DONTWAIT | MSG_TRUNC) >= 0 || errno == EINTR) {
    }
  }
  int one = 1;
  if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) < 0) {
    throw fail("setsockopt", "setsockopt IP_HDRINCL");
  }
  if (SetBufSize(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf) < 0) {
    throw fail("setsockopt", "setsockopt SO_RCVBUF");
  }
  if (SetBufSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf) < 0) {
    throw fail("setsockopt", "setsockopt SO_SNDBUF");
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(static_cast<uint32_t>(local));
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) {
    throw fail("bind", "bind");
  }
  return Napi::Number::New(env, fd);
}

// ---------------------------------------------------------------------------------------------
// setTunOffload(fd, flags): TUNSETOFFLOAD on a TUN opened with vnetHdr

Napi::Value SetTunOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt(info, 0, "fd", 0, INT32_MAX);
  int32_t flags = ArgInt(info, 1, "flags", 0, kTunOffloadMask);
  if ((flags & ~kTunOffloadMask) != 0) {
    throw Napi::RangeError::New(env, "flags must be a combination of TUN_F_* flags");
  }
  if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) < 0) {
    throw ErrnoError(env, errno, "ioctl", "setTunOffload(" + std::to_string(fd) + "): ioctl TUNSETOFFLOAD");
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// setThreadName(name): the calling thread's name as `top -H` and /proc/<pid>/task/*/comm show it
// (each data-path queue's worker names itself, e.g. "ipipd-q1"). At most 15 bytes.

Napi::Value SetThreadName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() > 15 || name.find('\0') != std::string::npos) {
    throw Napi::RangeError::New(env, "name must be 1 to 15 bytes");
  }
  int err = pthread_setname_np(pthread_self(), name.c_str());
  if (err != 0) throw ErrnoError(env, err, "prctl", "setThreadName(" + name + ")");
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Footprint (src/daemon/footprint.ts): glibc malloc's knobs, which only C can reach.
// limitMallocArenas(n): mallopt(M_ARENA_MAX, n), so that threads started from now on (the queue
// workers) share n arenas instead of getting up to 8 per core. trimMemory(): malloc_trim(0),
// handing the free pages of every arena back to the kernel; true if any memory was released.

Napi::Value LimitMallocArenas(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "arenas must be a number");
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(env, "arenas must be at least 1");
  // mallopt returns 1 on success, 0 on error (and sets no errno for M_ARENA_MAX).
  if (mallopt(M_ARENA_MAX, n) != 1) throw ErrnoError(env, EINVAL, "mallopt", "limitMallocArenas(" + std::to_string(n) + ")");
  return env.Undefined();
}

Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
}

// releaseHeap(): tells this thread's V8 isolate that memory is short (MemoryPressureLevel::
// kCritical): a full, compacting collection that hands emptied heap pages back at once instead
// of keeping them for later growth. Synchronous: it stalls this thread for the collection, so
// the daemon calls it only after the heap has grown far past its size once up (a large reload).
// N-API has no such call; node's v8.h is in every addon's include path.

Napi::Value ReleaseHeap(const Napi::CallbackInfo& info) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->MemoryPressureNotification(v8::MemoryPressureLevel::kCritical);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------------------------
// notifyDatagram(path, message): one datagram to a Unix datagram socket, the sd_notify protocol
// (systemd's $NOTIFY_SOCKET). A path starting with '@' names an abstract socket ('@' -> NUL).

Napi::Value NotifyDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "path and message must be strings");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string msg = info[1].As<Napi::String>().Utf8Value();
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() < 2 || path.size() >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    throw Napi::RangeError::New(env, "path must be an absolute path or @abstract name, shorter than 108 bytes");
  }
  memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket", "notify " + path);
  ssize_t n = sendto(fd, msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<struct sockaddr*>(&addr), len);
  int err = errno;
  close(fd);
  if (n < 0) throw ErrnoError(env, err, "sendto", "notify " + path);
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// close(fd)

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt(info, 0, "fd", INT32_MIN, INT32_MAX);
  // On Linux the descriptor is released even when close(2) reports EINTR: not an error.
  if (close(fd) < 0 && errno != EINTR) {
    throw ErrnoError(env, errno, "close", "close(" + std::to_string(fd) + ")");
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// The discard fd: writeTun, sendRaw and sendPacket given it check every packet as usual, then
// count it as written without a system call. For the JIT warm-up, which runs the real data path
// over synthetic packets (src/dataplane/warmup.ts) and must send nothing anywhere.
constexpr int32_t kDiscardFd = -2;

// ---------------------------------------------------------------------------------------------
// writeTun(fd, slab, offs, lens, n, res): written

Napi::Value WriteTun(const Napi::CallbackInfo& info) {
  PacketBatch b(info, 4);
  for (int32_t i = 0; i < b.n; i++) {
    if (!b.Usable(i)) continue;
    if (b.fd == kDiscardFd) {
      b.done++;
      continue;
    }
    ssize_t r;
    do {
      r = write(b.fd, b.base + b.off[i], static_cast<size_t>(b.len[i]));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      b.Fail(i, errno);
    } else {
      b.done++;
    }
  }
  return b.Finish(info.Env());
}

// ---------------------------------------------------------------------------------------------
// sendRaw(fd, slab, offs, lens, dsts, n, res): sent
// sendPacket(fd, slab, offs, lens, hopOf, n, res, hops): sent

// Messages per sendmmsg(2) call; the vectors live on the stack (64 * ~200 bytes).
constexpr int kSendChunk = 64;

// Send packets 0..n-1 of `b` on its fd with sendmmsg(2), in chunks of kSendChunk (the discard fd
// counts them as sent); addr(i, storage) writes packet i's destination and returns its length,
// or 0 if it has none (the packet fails with EINVAL). A packet that fails is marked with -errno
// and the rest go on.
template <typename Addr>
void SendChunks(PacketBatch& b, Addr addr) {
  const int fd = b.fd;
  struct mmsghdr msgs[kSendChunk];
  struct iovec iov[kSendChunk];
  struct sockaddr_storage to[kSendChunk];
  int32_t index[kSendChunk];  // message -> packet, to mark the packet a failure belongs to
  const int32_t n = b.n;
  int32_t i = 0;
  while (i < n) {
    int count = 0;
    for (; i < n && count < kSendChunk; i++) {
      if (!b.Usable(i)) continue;
      socklen_t namelen = addr(i, &to[count]);
      if (namelen == 0) {
        b.Fail(i, EINVAL);
        continue;
      }
      if (fd == kDiscardFd) {
        b.done++;
        continue;
      }
      index[count] = i;
      iov[count].iov_base = b.base + b.off[i];
      iov[count].iov_len = static_cast<size_t>(b.len[i]);
      memset(&msgs[count], 0, sizeof msgs[count]);
      msgs[count].msg_hdr.msg_name = &to[count];
      msgs[count].msg_hdr.msg_namelen = namelen;
      msgs[count].msg_hdr.msg_iov = &iov[count];
      msgs[count].msg_hdr.msg_iovlen = 1;
      count++;
    }
    // sendmmsg(2) stops at the first message that fails: it returns the count sent before it,
    // or -1 if that message was the first. Skip the failing one and go on.
    int k = 0;
    while (k < count) {
      int r = sendmmsg(fd, &msgs[k], static_cast<unsigned>(count - k), MSG_DONTWAIT);
      if (r > 0) {
        b.done += r;
        k += r;
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else {
        b.Fail(index[k], r < 0 ? errno : EAGAIN);
        k++;
      }
    }
  }
}

Napi::Value SendRaw(const Napi::CallbackInfo& info) {
  PacketBatch b(info, 5);
  Napi::Int32Array dsts = ArgI32(info, 4, "dsts");
  CheckCount(info.Env(), b.n, dsts, "dsts");
  const int32_t* dst = dsts.Data();
  SendChunks(b, [dst](int32_t i, struct sockaddr_storage* st) {
    auto* to = reinterpret_cast<struct sockaddr_in*>(st);
    memset(to, 0, sizeof *to);
    to->sin_family = AF_INET;
    to->sin_addr.s_addr = htonl(static_cast<uint32_t>(dst[i]));
    return static_cast<socklen_t>(sizeof *to);
  });
  return b.Finish(info.Env());
}

// The next-hop table of sendPacket: kHopInts int32s per peer, [ifindex, MAC bytes 0-3 big-endian,
// MAC bytes 4-5 in the top 16 bits] (src/daemon/nexthop.ts writes it).
constexpr int32_t kHopInts = 3;

// AF_PACKET (SOCK_DGRAM) on the underlay: packet i goes to the next hop of entry hopOf[i] (the
// link-layer header is the kernel's, from the MAC), with no route lookup and no IP output path
// per packet. JavaScript decides which packets go this way (src/dataplane/underlay-send.ts);
// an entry outside the table fails its packet with EINVAL.
Napi::Value SendPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PacketBatch b(info, 5);
  Napi::Int32Array hopOfArr = ArgI32(info, 4, "hopOf");
  Napi::Int32Array hopsArr = ArgI32(info, 7, "hops");
  CheckCount(env, b.n, hopOfArr, "hopOf");
  const int32_t* hopOf = hopOfArr.Data();
  const int32_t* hops = hopsArr.Data();
  const int32_t peers = static_cast<int32_t>(hopsArr.ElementLength() / kHopInts);
  SendChunks(b, [=](int32_t i, struct sockaddr_storage* st) -> socklen_t {
    int32_t p = hopOf[i];
    if (p < 0 || p >= peers) return 0;
    const int32_t* h = hops + p * kHopInts;
    auto* ll = reinterpret_cast<struct sockaddr_ll*>(st);
    memset(ll, 0, sizeof *ll);
    ll->sll_family = AF_PACKET;
    ll->sll_protocol = htons(ETH_P_IP);
    ll->sll_ifindex = h[0];
    ll->sll_halen = 6;
    uint32_t hi = static_cast<uint32_t>(h[1]);
    uint32_t lo = static_cast<uint32_t>(h[2]);
    ll->sll_addr[0] = static_cast<unsigned char>(hi >> 24);
    ll->sll_addr[1] = static_cast<unsigned char>(hi >> 16);
    ll->sll_addr[2] = static_cast<unsigned char>(hi >> 8);
    ll->sll_addr[3] = static_cast<unsigned char>(hi);
    ll->sll_addr[4] = static_cast<unsigned char>(lo >> 24);
    ll->sll_addr[5] = static_cast<unsigned char>(lo >> 16);
    return static_cast<socklen_t>(sizeof *ll);
  });
  return b.Finish(env);
}

// ---------------------------------------------------------------------------------------------
// openPacket(sndbuf): an AF_PACKET SOCK_DGRAM socket for sending IPv4 on the underlay (protocol
// 0: it receives nothing), non-blocking, close-on-exec.

Napi::Value OpenPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t sndbuf = ArgInt(info, 0, "sndbuf", 0, INT32_MAX);
  int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket", "openPacket: socket(AF_PACKET, SOCK_DGRAM)");
  if (SetBufSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf) < 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, err, "setsockopt", "openPacket: setsockopt SO_SNDBUF");
  }
  return Napi::Number::New(env, fd);
}

// ---------------------------------------------------------------------------------------------
// FOU (IPIP over UDP, Linux `ip fou add port P ipproto 4`): UDP sockets on the underlay.
// openUdp(localAddr, port, rcvbuf, sndbuf, options?): { fd, port, gro }
// sendUdp(slab, offs, lens, dsts, fds, n, res, port, gsoMax, tos?, heads?, tails?): sent

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

// Segments per UDP_SEGMENT send at most (UDP_MAX_SEGMENTS was 64 before Linux 6.3), and the
// largest UDP payload over IPv4 (65535 - 20 - 8).
constexpr int kUdpMaxSegments = 64;
constexpr int32_t kUdpMaxPayload = 65507;

// A non-blocking UDP socket bound to localAddr:port (0 = an ephemeral port), with outer DF set
// and the route's device MTU as the only limit (IP_PMTU_DISCOVER IP_PMTUDISC_PROBE: what
// IP_HDRINCL gives the raw socket; ipipd learns path MTUs itself from underlay ICMP).
// options.gro: try UDP_GRO and IP_RECVTOS (receive socket); options.sendOnly: a filter that drops
// every datagram it would receive (the per-flow source-port sockets). Returns the bound port and
// whether UDP_GRO was accepted.
Napi::Value OpenUdp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t local = ArgAddr(info, 0, "localAddr");
  int32_t port = ArgInt(info, 1, "port", 0, 65535);
  int32_t rcvbuf = ArgInt(info, 2, "rcvbuf", 0, INT32_MAX);
  int32_t sndbuf = ArgInt(info, 3, "sndbuf", 0, INT32_MAX);
  bool gro = false;
  bool sendOnly = false;
  if (info.Length() > 4 && info[4].IsObject()) {
    Napi::Object o = info[4].As<Napi::Object>();
    gro = o.Get("gro").ToBoolean();
    sendOnly = o.Get("sendOnly").ToBoolean();
  }
  std::string what = "openUdp(" + Ipv4Text(local) + ":" + std::to_string(port) + ")";
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) throw ErrnoError(env, errno, "socket", what + ": socket");
  auto fail = [&](const char* syscall, const std::string& step) {
    return CloseAndFail(env, fd, syscall, what + ": " + step);
  };
  if (sendOnly) {
    struct sock_filter drop[] = {{BPF_RET | BPF_K, 0, 0, 0}};
    struct sock_fprog prog = {1, drop};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) throw fail("setsockopt", "setsockopt SO_ATTACH_FILTER");
  }
  int pmtu = IP_PMTUDISC_PROBE;
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0) throw fail("setsockopt", "setsockopt IP_MTU_DISCOVER");
  if (SetBufSize(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf) < 0) throw fail("setsockopt", "setsockopt SO_RCVBUF");
  if (SetBufSize(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf) < 0) throw fail("setsockopt", "setsockopt SO_SNDBUF");
  bool groOn = false;
  if (gro) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof one) < 0) throw fail("setsockopt", "setsockopt IP_RECVTOS");
    // Refused by kernels before 5.0: the caller falls back to one datagram per read.
    groOn = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(static_cast<uint32_t>(local));
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) throw fail("bind", "bind");
  socklen_t salen = sizeof sa;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &salen) < 0) throw fail("getsockname", "getsockname");
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("port", Napi::Number::New(env, ntohs(sa.sin_port)));
  out.Set("gro", Napi::Boolean::New(env, groOn));
  return out;
}

// The kernel's answers to a UDP_SEGMENT send it cannot do (no checksum offload on the route's
// device: EIO; no UDP GSO at all: ENOPROTOOPT/EOPNOTSUPP; a segment size it refuses: EINVAL).
inline bool GsoRefused(int err) {
  return err == EIO || err == EINVAL || err == ENOPROTOOPT || err == EOPNOTSUPP;
}

// Packet i (the inner IPv4 packet: the UDP payload) goes to dsts[i]:port from socket fds[i].
// With gsoMax > 1, consecutive packets with the same socket and destination whose sizes are
// equal (the last of a run may be shorter) leave as one sendmsg with UDP_SEGMENT = that size,
// up to gsoMax segments and 65507 bytes. res: [0] failures, [1] last errno, [2] UDP_SEGMENT
// sends, [3] segments in them, [4] errno of a UDP_SEGMENT send the kernel refused (0 if none).
// A refused UDP_SEGMENT send is tried again one datagram at a time; if any of those goes out,
// the refusal was UDP_SEGMENT's and the rest of the call goes one by one too.
// Optional heads, tails (Int32Arrays of n): heads[i] > 0 makes packet i two pieces, its first
// heads[i] bytes at offs[i] and the rest at tails[i] (a TSO segment: its headers, built apart,
// and its payload where it is in the super-packet: no copy in userspace).
// One sendUdp call: the packets, the messages of the chunk being sent, and the tallies.
class UdpSend {
 public:
  UdpSend(const Napi::CallbackInfo& info);
  // Send everything; returns the packets sent.
  int32_t Run();

 private:
  int32_t Build(int32_t i, int* m, int* fd);
  int32_t Transmit(int m, int fd);
  int32_t RetryOneByOne(int k, int fd);
  bool Split(int32_t i) const { return heads_ != nullptr && heads_[i] > 0; }
  // Packet i's bytes lie in the slab (both pieces when split).
  bool Usable(int32_t i) const {
    if (!Split(i)) return InSlab(off_[i], len_[i], size_);
    return heads_[i] < len_[i] && InSlab(off_[i], heads_[i], size_) && InSlab(tails_[i], len_[i] - heads_[i], size_);
  }
  // Packet i's iovecs at `iov` (1, or 2 when split); returns how many.
  size_t Pieces(int32_t i, struct iovec* iov) const {
    const size_t head = static_cast<size_t>(Split(i) ? heads_[i] : len_[i]);
    iov[0].iov_base = base_ + off_[i];
    iov[0].iov_len = head;
    if (!Split(i)) return 1;
    iov[1].iov_base = base_ + tails_[i];
    iov[1].iov_len = static_cast<size_t>(len_[i]) - head;
    return 2;
  }
  void FailOne(int32_t i, int err) {
    failed_++;
    last_ = err;
    len_[i] = -err;
  }

  uint8_t* base_;
  size_t size_;
  const int32_t* off_;
  int32_t* len_;
  const int32_t* dst_;
  const int32_t* fds_;
  const int32_t* tos_ = nullptr;  // optional: each datagram's outer TOS
  const int32_t* heads_ = nullptr;  // optional: split packets (see above)
  const int32_t* tails_ = nullptr;
  int32_t n_;
  int32_t* res_;
  int32_t port_;
  int32_t gsoMax_;
  int32_t done_ = 0, failed_ = 0, last_ = 0;
  struct mmsghdr msgs_[kSendChunk];
  struct sockaddr_in to_[kSendChunk];
  int32_t first_[kSendChunk];  // message -> its first packet
  int32_t count_[kSendChunk];  // message -> its packets
  // IP_TOS first (the one-by-one retry keeps just it), then UDP_SEGMENT.
  alignas(struct cmsghdr) char ctrl_[kSendChunk][CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint16_t))];
  std::vector<struct iovec>& iov_;
  static std::vector<struct iovec>& Iovecs() {
    static thread_local std::vector<struct iovec> v(2 * kSendChunk * kUdpMaxSegments);
    return v;
  }
};

UdpSend::UdpSend(const Napi::CallbackInfo& info) : iov_(Iovecs()) {
  Napi::Env env = info.Env();
  Napi::Uint8Array slab = ArgBytes(info, 0, "slab");
  Napi::Int32Array offsA = ArgI32(info, 1, "offs");
  Napi::Int32Array lensA = ArgI32(info, 2, "lens");
  Napi::Int32Array dstsA = ArgI32(info, 3, "dsts");
  Napi::Int32Array fdsA = ArgI32(info, 4, "fds");
  n_ = ArgInt(info, 5, "n", 0, INT32_MAX);
  Napi::Int32Array resA = ArgI32(info, 6, "res");
  port_ = ArgInt(info, 7, "port", 1, 65535);
  gsoMax_ = ArgInt(info, 8, "gsoMax", 1, kUdpMaxSegments);
  CheckCount(env, n_, offsA, "offs");
  CheckCount(env, n_, lensA, "lens");
  CheckCount(env, n_, dstsA, "dsts");
  CheckCount(env, n_, fdsA, "fds");
  if (resA.ElementLength() < 5) throw Napi::RangeError::New(env, "res must have at least 5 elements");
  if (info.Length() > 9 && !info[9].IsUndefined()) {
    Napi::Int32Array tosA = ArgI32(info, 9, "tos");
    CheckCount(env, n_, tosA, "tos");
    tos_ = tosA.Data();
  }
  if (info.Length() > 11 && !info[10].IsUndefined() && !info[11].IsUndefined()) {
    Napi::Int32Array headsA = ArgI32(info, 10, "heads");
    Napi::Int32Array tailsA = ArgI32(info, 11, "tails");
    CheckCount(env, n_, headsA, "heads");
    CheckCount(env, n_, tailsA, "tails");
    heads_ = headsA.Data();
    tails_ = tailsA.Data();
  }
  base_ = slab.Data();
  size_ = slab.ByteLength();
  off_ = offsA.Data();
  len_ = lensA.Data();
  dst_ = dstsA.Data();
  fds_ = fdsA.Data();
  res_ = resA.Data();
}

int32_t UdpSend::Run() {
  res_[2] = res_[3] = res_[4] = 0;
  int32_t i = 0;
  while (i < n_) {
    int m = 0;
    int fd = -1;
    int32_t next = Build(i, &m, &fd);
    int32_t again = Transmit(m, fd);
    i = again >= 0 ? again : next;
  }
  res_[0] = failed_;
  res_[1] = last_;
  return done_;
}

// Messages from packet i on, up to kSendChunk, all on one socket (sendmmsg takes one fd);
// returns the packet after the last one taken.
int32_t UdpSend::Build(int32_t i, int* mOut, int* fdOut) {
  int m = 0;
  int fd = -1;
  size_t v = 0;
  while (i < n_ && m < kSendChunk) {
    if (!Usable(i) || len_[i] > kUdpMaxPayload) {
      FailOne(i, Usable(i) ? EMSGSIZE : EINVAL);
      i++;
      continue;
    }
    if (fds_[i] == kDiscardFd) {
      done_++;
      i++;
      continue;
    }
    if (m > 0 && fds_[i] != fd) break;
    fd = fds_[i];
    const int32_t seg = len_[i];
    int32_t k = 1;
    int32_t total = seg;
    const int tos = tos_ != nullptr ? tos_[i] & 0xff : 0;
    while (k < gsoMax_ && i + k < n_ && fds_[i + k] == fd && dst_[i + k] == dst_[i] && len_[i + k - 1] == seg &&
           (tos_ == nullptr || (tos_[i + k] & 0xff) == tos) &&
           len_[i + k] > 0 && len_[i + k] <= seg && total + len_[i + k] <= kUdpMaxPayload &&
           Usable(i + k)) {
      total += len_[i + k];
      k++;
    }
    first_[m] = i;
    count_[m] = k;
    size_t pieces = 0;
    for (int32_t j = 0; j < k; j++) pieces += Pieces(i + j, &iov_[v + pieces]);
    memset(&to_[m], 0, sizeof to_[m]);
    to_[m].sin_family = AF_INET;
    to_[m].sin_addr.s_addr = htonl(static_cast<uint32_t>(dst_[i]));
    to_[m].sin_port = htons(static_cast<uint16_t>(port_));
    memset(&msgs_[m], 0, sizeof msgs_[m]);
    struct msghdr& h = msgs_[m].msg_hdr;
    h.msg_name = &to_[m];
    h.msg_namelen = sizeof to_[m];
    h.msg_iov = &iov_[v];
    h.msg_iovlen = pieces;
    size_t clen = 0;
    if (tos != 0) {
      auto* c = reinterpret_cast<struct cmsghdr*>(ctrl_[m]);
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_TOS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &tos, sizeof tos);
      clen = CMSG_SPACE(sizeof(int));
    }
    if (k > 1) {
      auto* c = reinterpret_cast<struct cmsghdr*>(ctrl_[m] + clen);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t gs = static_cast<uint16_t>(seg);
      memcpy(CMSG_DATA(c), &gs, sizeof gs);
      clen += CMSG_SPACE(sizeof(uint16_t));
    }
    if (clen > 0) {
      h.msg_control = ctrl_[m];
      h.msg_controllen = clen;
    }
    v += pieces;
    i += k;
    m++;
  }
  *mOut = m;
  *fdOut = fd;
  return i;
}

// sendmmsg(2) the m messages; it stops at the first that fails: that one's packets fail (or,
// refused UDP_SEGMENT, go one by one) and the rest go on. Returns -1, or the packet to build
// from again when UDP_SEGMENT was turned off with messages of this chunk still to send.
int32_t UdpSend::Transmit(int m, int fd) {
  int k = 0;
  while (k < m) {
    int r = sendmmsg(fd, &msgs_[k], static_cast<unsigned>(m - k), MSG_DONTWAIT);
    if (r > 0) {
      for (int x = k; x < k + r; x++) {
        done_ += count_[x];
        if (count_[x] > 1) {
          res_[2]++;
          res_[3] += count_[x];
        }
      }
      k += r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    int err = r < 0 ? errno : EAGAIN;
    if (count_[k] > 1 && GsoRefused(err)) {
      // If one datagram at a time works the kernel refused UDP_SEGMENT itself: off for the
      // rest of the call (and, by the caller, for good); if not the error was the packets'
      // (e.g. larger than the device MTU).
      if (RetryOneByOne(k, fd) > 0 && gsoMax_ > 1) {
        res_[4] = err;
        gsoMax_ = 1;
        if (k + 1 < m) return first_[k + 1];
      }
      k++;
      continue;
    }
    for (int32_t j = 0; j < count_[k]; j++) FailOne(first_[k] + j, err);
    k++;
  }
  return -1;
}

// Message k's packets one datagram each; returns how many went out.
int32_t UdpSend::RetryOneByOne(int k, int fd) {
  struct msghdr one = msgs_[k].msg_hdr;
  // Keep an IP_TOS cmsg (the first), drop UDP_SEGMENT.
  const int tos = tos_ != nullptr ? tos_[first_[k]] & 0xff : 0;
  one.msg_control = tos != 0 ? ctrl_[k] : nullptr;
  one.msg_controllen = tos != 0 ? CMSG_SPACE(sizeof(int)) : 0;
  struct iovec* piece = msgs_[k].msg_hdr.msg_iov;
  int32_t ok = 0;
  for (int32_t j = 0; j < count_[k]; j++) {
    one.msg_iov = piece;
    one.msg_iovlen = Split(first_[k] + j) ? 2 : 1;
    piece += one.msg_iovlen;
    ssize_t w;
    do {
      w = sendmsg(fd, &one, MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
      FailOne(first_[k] + j, errno);
    } else {
      ok++;
      done_++;
    }
  }
  return ok;
}

Napi::Value SendUdp(const Napi::CallbackInfo& info) {
  UdpSend send(info);
  return Napi::Number::New(info.Env(), send.Run());
}


// ---------------------------------------------------------------------------------------------
// rtnetlink: openNetlink(rcvbuf): { fd, port }; netlinkJoin(fd, group); netlinkSend(fd, msg)

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

Napi::Value OpenNetlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t rcvbuf = ArgInt(info, 0, "rcvbuf", 0, INT32_MAX);
  std::string what = "openNetlink";
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) throw ErrnoError(env, errno, "socket", what + ": socket");
  auto fail = [&](const char* syscall, const std::string& step) {
    return CloseAndFail(env, fd, syscall, what + ": " + step);
  };
  if (SetBufSize(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf) < 0) {
    throw fail("setsockopt", "setsockopt SO_RCVBUF");
  }
  // Best effort, both: an error reply that carries the kernel's reason as text (extended ACK,
  // Linux 4.12), and that does not echo the whole request back (Linux 4.3).
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;  // nl_pid 0: the kernel picks the port
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) throw fail("bind", "bind");
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) < 0) {
    throw fail("getsockname", "getsockname");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("port", Napi::Number::New(env, sa.nl_pid));
  return out;
}

Napi::Value NetlinkJoin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt(info, 0, "fd", 0, INT32_MAX);
  int32_t group = ArgInt(info, 1, "group", 1, INT32_MAX);
  if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
    throw ErrnoError(env, errno, "setsockopt",
                     "netlinkJoin(" + std::to_string(fd) + ", " + std::to_string(group) +
                         "): setsockopt NETLINK_ADD_MEMBERSHIP");
  }
  return env.Undefined();
}

Napi::Value NetlinkSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt(info, 0, "fd", 0, INT32_MAX);
  Napi::Uint8Array msg = ArgBytes(info, 1, "msg");
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;  // to the kernel
  ssize_t r;
  do {
    r = sendto(fd, msg.Data(), msg.ByteLength(), 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw ErrnoError(env, errno, "sendto", "netlinkSend(" + std::to_string(fd) + "): sendto");
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Reader

constexpr int kKindTun = 0;
constexpr int kKindRaw = 1;
// FOU: a UDP socket; per datagram also its source, UDP_GRO segment size and TOS (Reader's `info`).
constexpr int kKindUdp = 2;
constexpr int kUdpInfoInts = 4;
// rtnetlink: one datagram (one or more netlink messages) per slot. A datagram that was not
// sent by the kernel (nl_pid != 0: another process writing to our port) is reported as -2.
constexpr int kKindNetlink = 3;
constexpr size_t kUdpCtrl = 64;
constexpr int kMaxBatch = 1024;   // UIO_MAXIOV: the most recvmmsg(2) takes in one call
// Per wake-up, so that one busy fd cannot starve the others (libuv serves the fds that became
// ready in the same loop turn one after the other): at most kMaxRounds batches, and no further
// batch once kWakeBytes have been read. The byte bound is what matters for bulk traffic: a TUN
// batch of TSO super-packets is a whole packed slab (~256 KiB), so 16 of them were ~4 MiB, many
// milliseconds of segmenting and sending while the other direction's packets (the TCP ACKs, a
// ping's reply) waited in their socket (docs/performance.md, "Latency hop by hop: where a ping
// waits, idle and under load"). Small packets still come up to kMaxRounds batches per wake-up.
constexpr int kMaxRounds = 16;
constexpr size_t kWakeBytes = 128 * 1024;
// A raw or UDP Reader that has lately seen merged datagrams (UDP_GRO, or the underlay's GRO
// merging IPIP/TCP packets; each up to 64 KiB) reads at most this many bytes' worth of slots
// per recvmmsg(2), so that bulk traffic fills the first few slots only instead of every slot
// of the batch (as the TUN slab's TUN_PACK_BYTES, src/dataplane/slabs.ts). "Lately": within
// the last kGroQuietReads reads that returned anything; bulk traffic mixes merged datagrams
// with single ones (what GRO flushed alone), so one read without a merged datagram says
// nothing.
constexpr size_t kGroReadBytes = 256 * 1024;
constexpr int kGroQuietReads = 64;

class Reader : public Napi::ObjectWrap<Reader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Reader",
                       {
                           InstanceMethod("start", &Reader::Start),
                           InstanceMethod("stop", &Reader::Stop),
                           InstanceMethod("close", &Reader::Close),
                       });
  }

  explicit Reader(const Napi::CallbackInfo& info);
  ~Reader() override;

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);
  static void OnEnvCleanup(void* arg);

  void Wake(int status);
  void Drain();
  int ReadTun(int* err, bool* full);
  int ReadRaw(int* err, bool* full);
  int MergedVlen() const;
  void NoteMerged(bool merged, int r, int vlen, bool* full);
  int ReadUdp(int* err, bool* full);
  int ReadNetlink(int* err);
  bool Rearm();
  void Unpin();
  void ReleaseHandle();
  std::string What() const;

  int fd_;
  int kind_;
  int slot_;
  int headroom_;
  int batch_;
  uint8_t* slab_;
  size_t slabLen_;
  int32_t* lens_;
  // kKindTun, packed mode: where each packet's slot starts (written here), else null.
  int32_t* offs_ = nullptr;
  Napi::ObjectReference offsRef_;
  Napi::ObjectReference slabRef_;
  Napi::ObjectReference lensRef_;
  Napi::FunctionReference onBatch_;
  Napi::FunctionReference onError_;
  std::unique_ptr<Napi::AsyncContext> context_;
  // recvmmsg(2) vectors, built once: entry i always points at slot i.
  std::vector<struct mmsghdr> msgs_;
  std::vector<struct iovec> iov_;
  // kKindUdp: each datagram's source and control messages, and where they are reported.
  std::vector<struct sockaddr_in> names_;
  // kKindNetlink: each datagram's sender.
  std::vector<struct sockaddr_nl> nlNames_;
  std::vector<char> ctrl_;
  int32_t* info_ = nullptr;
  Napi::ObjectReference infoRef_;
  // Raw and UDP kinds: reads with data since the last one with a merged (GRO) datagram
  // (kGroQuietReads: none lately).
  int groQuiet_ = kGroQuietReads;
  uv_poll_t* handle_ = nullptr;  // heap-allocated: it must outlive us until its close callback
  bool started_ = false;
  bool closed_ = false;
  bool cleanupHook_ = false;
  bool inWake_ = false;
};

Reader::Reader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Reader>(info) {
  Napi::Env env = info.Env();
  fd_ = ArgInt(info, 0, "fd", 0, INT32_MAX);
  kind_ = ArgInt(info, 1, "kind", kKindTun, kKindNetlink);
  Napi::Uint8Array slab = ArgBytes(info, 2, "slab");
  Napi::Int32Array lens = ArgI32(info, 3, "lens");
  slot_ = ArgInt(info, 4, "slotSize", 1, INT32_MAX);
  headroom_ = ArgInt(info, 5, "headroom", 0, INT32_MAX);
  batch_ = ArgInt(info, 6, "batch", 1, kMaxBatch);
  Napi::Function onBatch = ArgFn(info, 7, "onBatch");
  Napi::Function onError = ArgFn(info, 8, "onError");
  if (headroom_ >= slot_) {
    throw Napi::RangeError::New(env, "headroom must be smaller than slotSize");
  }
  // Packed mode (a TUN Reader given `offs`): the slab needs room for one largest packet only.
  const bool packed = kind_ == kKindTun && info.Length() >= 10 && !info[9].IsUndefined();
  if (slab.ByteLength() < (packed ? static_cast<size_t>(slot_) : static_cast<size_t>(batch_) * static_cast<size_t>(slot_))) {
    throw Napi::RangeError::New(env, packed ? "slab must hold slotSize bytes" : "slab must hold batch * slotSize bytes");
  }
  if (lens.ElementLength() < static_cast<size_t>(batch_)) {
    throw Napi::RangeError::New(env, "lens must have at least batch elements");
  }

  slab_ = slab.Data();
  slabLen_ = slab.ByteLength();
  lens_ = lens.Data();
  if (packed) {
    Napi::Int32Array offs = ArgI32(info, 9, "offs");
    if (offs.ElementLength() < static_cast<size_t>(batch_)) {
      throw Napi::RangeError::New(env, "offs must have at least batch elements");
    }
    offs_ = offs.Data();
    offsRef_ = Napi::Persistent(static_cast<Napi::Object>(offs));
  }
  slabRef_ = Napi::Persistent(static_cast<Napi::Object>(slab));
  lensRef_ = Napi::Persistent(static_cast<Napi::Object>(lens));
  onBatch_ = Napi::Persistent(onBatch);
  onError_ = Napi::Persistent(onError);
  context_ = std::make_unique<Napi::AsyncContext>(env, "ipipd.Reader");

  if (kind_ == kKindUdp) {
    // Optional 10th argument for kKindUdp: Int32Array of batch * 4 (source address, source
    // port, UDP_GRO segment size or 0, TOS) per datagram.
    if (info.Length() < 10) throw Napi::TypeError::New(env, "info must be an Int32Array");
    Napi::Int32Array infoArr = ArgI32(info, 9, "info");
    if (infoArr.ElementLength() < static_cast<size_t>(batch_) * kUdpInfoInts) {
      throw Napi::RangeError::New(env, "info must have at least batch * 4 elements");
    }
    info_ = infoArr.Data();
    infoRef_ = Napi::Persistent(static_cast<Napi::Object>(infoArr));
    names_.resize(batch_);
    ctrl_.resize(static_cast<size_t>(batch_) * kUdpCtrl);
  }
  if (kind_ == kKindNetlink) nlNames_.resize(batch_);
  if (kind_ != kKindTun) {
    msgs_.resize(batch_);
    iov_.resize(batch_);
    size_t cap = static_cast<size_t>(slot_ - headroom_);
    for (int i = 0; i < batch_; i++) {
      iov_[i].iov_base = slab_ + static_cast<size_t>(i) * slot_ + headroom_;
      iov_[i].iov_len = cap;
      memset(&msgs_[i], 0, sizeof msgs_[i]);
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
  }

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "ipipd.Reader: no libuv loop");
  }
  uv_poll_t* handle = new uv_poll_t;
  int r = uv_poll_init(loop, handle, fd_);
  if (r < 0) {
    delete handle;  // uv_poll_init registers the handle only on success
    throw UvError(env, r, "uv_poll_init", What() + ": uv_poll_init");
  }
  handle->data = this;
  handle_ = handle;
  if (kind_ == kKindNetlink) uv_unref(reinterpret_cast<uv_handle_t*>(handle));
  // A worker's loop must have no open handles when it is torn down.
  if (napi_add_env_cleanup_hook(env, OnEnvCleanup, this) == napi_ok) cleanupHook_ = true;
}

Reader::~Reader() {
  // Reached from the GC finalizer (never while started: started pins us) or at teardown.
  if (!closed_) {
    closed_ = true;
    ReleaseHandle();
  }
}

std::string Reader::What() const {
  std::string kind = kind_ == kKindTun ? "tun" : kind_ == kKindNetlink ? "netlink" : "raw";
  return "Reader(" + kind + " fd " + std::to_string(fd_) + ")";
}

Napi::Value Reader::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    throw MakeSysError(env, EBADF, "uv_poll_start", What() + ": start", "EBADF",
                       "the reader is closed");
  }
  if (started_) return env.Undefined();
  int r = uv_poll_start(handle_, UV_READABLE, OnPoll);
  if (r < 0) throw UvError(env, r, "uv_poll_start", What() + ": uv_poll_start");
  started_ = true;
  Ref();
  return env.Undefined();
}

Napi::Value Reader::Stop(const Napi::CallbackInfo& info) {
  if (started_ && !closed_) {
    uv_poll_stop(handle_);
    Unpin();
  }
  return info.Env().Undefined();
}

Napi::Value Reader::Close(const Napi::CallbackInfo& info) {
  if (!closed_) {
    if (started_) Unpin();
    closed_ = true;
    ReleaseHandle();  // uv_close also stops the poll
    onBatch_.Reset();
    onError_.Reset();
    slabRef_.Reset();
    lensRef_.Reset();
    infoRef_.Reset();
    info_ = nullptr;
    offsRef_.Reset();
    offs_ = nullptr;
    // napi_make_callback may still be using the async context if we are closed from inside a
    // callback: Wake() destroys it on the way out instead.
    if (!inWake_) context_.reset();
    slab_ = nullptr;
    lens_ = nullptr;
  }
  return info.Env().Undefined();
}

void Reader::Unpin() {
  started_ = false;
  Unref();
}

void Reader::ReleaseHandle() {
  if (handle_ != nullptr) {
    handle_->data = nullptr;  // a callback already queued in this loop turn must not reach us
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnHandleClosed);
    handle_ = nullptr;
  }
  if (cleanupHook_) {
    cleanupHook_ = false;
    napi_remove_env_cleanup_hook(Env(), OnEnvCleanup, this);
  }
}

void Reader::OnHandleClosed(uv_handle_t* handle) {
  delete reinterpret_cast<uv_poll_t*>(handle);
}

void Reader::OnEnvCleanup(void* arg) {
  Reader* self = static_cast<Reader*>(arg);
  self->cleanupHook_ = false;  // being run: it must not be removed
  if (!self->closed_) {
    self->closed_ = true;
    self->started_ = false;
    self->ReleaseHandle();
  }
}

void Reader::OnPoll(uv_poll_t* handle, int status, int events) {
  Reader* self = static_cast<Reader*>(handle->data);
  if (self != nullptr) self->Wake(status);
}

void Reader::Wake(int status) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  // Hold ourselves for the whole wake-up: a callback may close() us and drop the last pin.
  Ref();
  inWake_ = true;
  try {
    if (status < 0 && kind_ == kKindNetlink && Rearm()) {
      // Reported and polling again: read what is queued.
      if (started_ && !closed_) Drain();
    } else if (status < 0) {
      // libuv has already stopped the handle (it does so on POLLERR, e.g. a TUN whose device
      // was deleted): mirror that, then report like a read error. JS may start() again.
      if (started_) Unpin();
      Napi::Error err = UvError(env, status, "uv_poll", What() + ": uv_poll");
      onError_.MakeCallback(Value(), {err.Value()}, *context_);
    } else {
      Drain();
    }
  } catch (const Napi::Error& e) {
    // A JS callback threw (or an N-API call failed): surface it as an uncaught exception, as
    // if it had been thrown from any other event-loop callback. The rest of this wake-up is
    // abandoned; the fd is level-triggered, so what is left is read on the next one.
    napi_fatal_exception(env, e.Value());
  }
  inWake_ = false;
  if (closed_) context_.reset();
  Unref();
}

// A netlink socket with a pending error (ENOBUFS: the kernel dropped messages it had for us, on
// a multicast group that outran the receive buffer) polls as POLLERR, on which libuv stops the
// handle and says UV_EBADF. Reading SO_ERROR clears the error: report it as what it is (the
// errno recvmmsg(2) would have returned) and poll again. False if there was no such error.
bool Reader::Rearm() {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr == 0) return false;
  Napi::Env env = Env();
  int r = started_ ? uv_poll_start(handle_, UV_READABLE, OnPoll) : 0;
  if (r < 0) {
    Unpin();
    onError_.MakeCallback(Value(), {UvError(env, r, "uv_poll_start", What() + ": uv_poll_start").Value()}, *context_);
    return true;
  }
  onError_.MakeCallback(Value(), {ErrnoError(env, soerr, "recvmmsg", What() + ": recvmmsg").Value()}, *context_);
  return true;
}

void Reader::Drain() {
  Napi::Env env = Env();
  size_t bytes = 0;
  for (int round = 0; round < kMaxRounds; round++) {
    int err = 0;
    // The batch ended for want of room (packed TUN) or by the UDP_GRO cap, not of packets.
    bool full = false;
    int n = kind_ == kKindTun      ? ReadTun(&err, &full)
            : kind_ == kKindUdp     ? ReadUdp(&err, &full)
            : kind_ == kKindNetlink ? ReadNetlink(&err)
                                    : ReadRaw(&err, &full);
    if (n > 0) {
      // Counted before onBatch, which may reuse lens_ (a truncated packet took a whole slot).
      for (int i = 0; i < n; i++) bytes += lens_[i] > 0 ? static_cast<size_t>(lens_[i]) : static_cast<size_t>(slot_);
      onBatch_.MakeCallback(Value(), {Napi::Number::New(env, n)}, *context_);
      if (closed_ || !started_) return;  // stopped or closed from inside the callback
    }
    if (err != 0) {
      Napi::Error e = ErrnoError(env, err, kind_ == kKindTun ? "read" : "recvmmsg",
                                 What() + (kind_ == kKindTun ? ": read" : ": recvmmsg"));
      onError_.MakeCallback(Value(), {e.Value()}, *context_);
      return;
    }
    if (n < batch_ && !full) return;
    if (bytes >= kWakeBytes) return;  // level-triggered: the rest is read on the next wake-up
  }
}

// read(2) per packet until EAGAIN or a full batch. A TUN read truncates silently, so a read
// that fills the whole slot is reported as truncated (-1): usable capacity is one byte less.
// Packed mode: packet i's slot starts at offs_[i], the next one at the first 64-byte boundary
// after it (a truncated packet takes a whole slot), and a packet is read only while a whole
// slot still fits in the slab; *full says the batch ended for want of room, not of packets.
int Reader::ReadTun(int* err, bool* full) {
  const size_t cap = static_cast<size_t>(slot_ - headroom_);
  size_t pos = 0;
  int n = 0;
  while (n < batch_) {
    if (offs_ != nullptr && pos + static_cast<size_t>(slot_) > slabLen_) {
      *full = true;
      break;
    }
    const size_t start = offs_ != nullptr ? pos : static_cast<size_t>(n) * slot_;
    uint8_t* p = slab_ + start + headroom_;
    ssize_t r = read(fd_, p, cap);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) *err = errno;
      break;
    }
    const bool truncated = static_cast<size_t>(r) >= cap;
    lens_[n] = truncated ? -1 : static_cast<int32_t>(r);
    if (offs_ != nullptr) {
      offs_[n] = static_cast<int32_t>(start);
      pos = start + (truncated ? static_cast<size_t>(slot_) : (static_cast<size_t>(headroom_) + static_cast<size_t>(r) + 63) & ~static_cast<size_t>(63));
    }
    n++;
  }
  return n;
}

// One recvmmsg(2) for up to a batch. The kernel flags a datagram larger than its slot with
// MSG_TRUNC (the copied length would be the slot size): reported as -1.
// A datagram longer than a quarter of the slot counts as merged by the underlay's GRO (the
// kernel merges IPIP/TCP packets before the raw socket: ipip_offload, built in), and caps
// the reads as UDP_GRO datagrams do (MergedVlen); a jumbo-frame MTU (9000) stays below it.
int Reader::ReadRaw(int* err, bool* full) {
  const int vlen = MergedVlen();
  int r = recvmmsg(fd_, msgs_.data(), static_cast<unsigned>(vlen), MSG_DONTWAIT, nullptr);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) *err = errno;
    return 0;
  }
  bool merged = false;
  for (int i = 0; i < r; i++) {
    lens_[i] = (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0
                   ? -1
                   : static_cast<int32_t>(msgs_[i].msg_len);
    if (lens_[i] > slot_ / 4) merged = true;
  }
  NoteMerged(merged, r, vlen, full);
  return r;
}

// Datagrams per recvmmsg(2): the batch, or while merged ones come, kGroReadBytes of slots.
int Reader::MergedVlen() const {
  if (groQuiet_ >= kGroQuietReads) return batch_;
  return std::min(batch_, std::max(1, static_cast<int>(kGroReadBytes / static_cast<size_t>(slot_))));
}

// After a read of r datagrams (asked: vlen): whether one was merged; *full if the cap, not the
// socket, ended it (read on).
void Reader::NoteMerged(bool merged, int r, int vlen, bool* full) {
  if (merged) groQuiet_ = 0;
  else if (r > 0 && groQuiet_ < kGroQuietReads) groQuiet_++;
  *full = r == vlen && vlen < batch_;
}

// One recvmmsg(2) on a UDP socket: datagram i's payload into slot i as ReadRaw, its source
// address and port, the segment size of a UDP_GRO read (0 if none) and the TOS into info_.
// While UDP_GRO datagrams come (kGroQuietReads), at most kGroReadBytes / slot datagrams per
// call (*full: that many came, read on).
int Reader::ReadUdp(int* err, bool* full) {
  for (int i = 0; i < batch_; i++) {
    struct msghdr& h = msgs_[i].msg_hdr;
    h.msg_name = &names_[i];
    h.msg_namelen = sizeof names_[i];
    h.msg_control = ctrl_.data() + static_cast<size_t>(i) * kUdpCtrl;
    h.msg_controllen = kUdpCtrl;
  }
  const int vlen = MergedVlen();
  int r = recvmmsg(fd_, msgs_.data(), static_cast<unsigned>(vlen), MSG_DONTWAIT, nullptr);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) *err = errno;
    return 0;
  }
  bool gro = false;
  for (int i = 0; i < r; i++) {
    struct msghdr& h = msgs_[i].msg_hdr;
    lens_[i] = (h.msg_flags & MSG_TRUNC) != 0 ? -1 : static_cast<int32_t>(msgs_[i].msg_len);
    int32_t* o = info_ + i * kUdpInfoInts;
    o[0] = static_cast<int32_t>(ntohl(names_[i].sin_addr.s_addr));
    o[1] = ntohs(names_[i].sin_port);
    o[2] = 0;
    o[3] = 0;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int gso = 0;
        memcpy(&gso, CMSG_DATA(c), sizeof gso);
        o[2] = gso;
        if (gso > 0) gro = true;
      } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
        o[3] = *reinterpret_cast<const uint8_t*>(CMSG_DATA(c));
      }
    }
  }
  NoteMerged(gro, r, vlen, full);
  return r;
}

// One recvmmsg(2) on a netlink socket: datagram i into slot i as ReadRaw (MSG_TRUNC: -1), or -2
// if it did not come from the kernel.
int Reader::ReadNetlink(int* err) {
  for (int i = 0; i < batch_; i++) {
    struct msghdr& h = msgs_[i].msg_hdr;
    h.msg_name = &nlNames_[i];
    h.msg_namelen = sizeof nlNames_[i];
  }
  int r = recvmmsg(fd_, msgs_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) *err = errno;
    return 0;
  }
  for (int i = 0; i < r; i++) {
    const struct msghdr& h = msgs_[i].msg_hdr;
    lens_[i] = nlNames_[i].nl_pid != 0 ? -2
               : (h.msg_flags & MSG_TRUNC) != 0 ? -1
                                                 : static_cast<int32_t>(msgs_[i].msg_len);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Module

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("openTun", Napi::Function::New(env, OpenTun, "openTun"));
  exports.Set("openRaw", Napi::Function::New(env, OpenRaw, "openRaw"));
  exports.Set("close", Napi::Function::New(env, CloseFd, "close"));
  exports.Set("notifyDatagram", Napi::Function::New(env, NotifyDatagram, "notifyDatagram"));
  exports.Set("setThreadName", Napi::Function::New(env, SetThreadName, "setThreadName"));
  exports.Set("limitMallocArenas", Napi::Function::New(env, LimitMallocArenas, "limitMallocArenas"));
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory, "trimMemory"));
  exports.Set("releaseHeap", Napi::Function::New(env, ReleaseHeap, "releaseHeap"));
  exports.Set("setTunOffload", Napi::Function::New(env, SetTunOffload, "setTunOffload"));
  exports.Set("writeTun", Napi::Function::New(env, WriteTun, "writeTun"));
  exports.Set("sendRaw", Napi::Function::New(env, SendRaw, "sendRaw"));
  exports.Set("sendPacket", Napi::Function::New(env, SendPacket, "sendPacket"));
  exports.Set("openPacket", Napi::Function::New(env, OpenPacket, "openPacket"));
  exports.Set("openUdp", Napi::Function::New(env, OpenUdp, "openUdp"));
  exports.Set("sendUdp", Napi::Function::New(env, SendUdp, "sendUdp"));
  exports.Set("openNetlink", Napi::Function::New(env, OpenNetlink, "openNetlink"));
  exports.Set("netlinkJoin", Napi::Function::New(env, NetlinkJoin, "netlinkJoin"));
  exports.Set("netlinkSend", Napi::Function::New(env, NetlinkSend, "netlinkSend"));
  exports.Set("READER_UDP", Napi::Number::New(env, kKindUdp));
  exports.Set("READER_NETLINK", Napi::Number::New(env, kKindNetlink));
  exports.Set("Reader", Reader::Define(env));
  exports.Set("IFNAMSIZ", Napi::Number::New(env, IFNAMSIZ));
  exports.Set("DISCARD_FD", Napi::Number::New(env, kDiscardFd));
  exports.Set("HOP_INTS", Napi::Number::New(env, kHopInts));
  exports.Set("IPPROTO_IPIP", Napi::Number::New(env, IPPROTO_IPIP));
  exports.Set("VNET_HDR_LEN", Napi::Number::New(env, kVnetHdrLen));
  exports.Set("TUN_F_CSUM", Napi::Number::New(env, TUN_F_CSUM));
  exports.Set("TUN_F_TSO4", Napi::Number::New(env, TUN_F_TSO4));
  exports.Set("TUN_F_TSO6", Napi::Number::New(env, TUN_F_TSO6));
  exports.Set("TUN_F_TSO_ECN", Napi::Number::New(env, TUN_F_TSO_ECN));
  exports.Set("TUN_F_UFO", Napi::Number::New(env, TUN_F_UFO));
  exports.Set("TUN_F_USO4", Napi::Number::New(env, TUN_F_USO4));
  exports.Set("TUN_F_USO6", Napi::Number::New(env, TUN_F_USO6));
  return exports;
}

}  // namespace

NODE_API_MODULE(ipipd_native, Init)
