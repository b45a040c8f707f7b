using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>Which descriptor a scripted message carries (created once, passed again in every stream).</summary>
internal enum FdKind { Memory, SmallMemory, Kick0, Kick1, Call0, Call1, Err0, EventFdAsMemory }

/// <summary>One step of a front-end session: a message (with descriptors), or a kick with a request in the ring.</summary>
internal sealed record SessionStep(VhostUserRequest Request, uint Flags, byte[] Payload, FdKind[] Fds, int KickQueue = -1)
{
    public bool IsKick => KickQueue >= 0;

    public static SessionStep Kick(int queue) => new(VhostUserRequest.None, 0, [], [], queue);

    public override string ToString() => IsKick ? $"kick {KickQueue}" : $"{Request.SpecName()} flags 0x{Flags:x} {Payload.Length} bytes fds [{string.Join(",", Fds)}]";
}

/// <summary>What one mutation of a recorded session changes.</summary>
internal enum StreamOp { Drop, Duplicate, Swap, Insert, Request, Flags, SizeField, PayloadU32, PayloadU64, Resize, Fds, Truncate, RandomTail, RingMemory }

internal readonly record struct StreamMutation(StreamOp Op, int Target, int Value)
{
    public override string ToString() => $"{Op}({Target % 100},{Value})";
}

/// <summary>One vhost-user fuzz stream: a recorded session, the server it goes to, and the mutations.</summary>
internal sealed record VhostStream(int Script, int Server, ulong Seed, StreamMutation[] Mutations)
{
    public int Index { get; init; }
    public override string ToString() => $"stream {Index}: session {Script}, server {Server}, seed 0x{Seed:x}, mutations [{string.Join(", ", Mutations)}]";
}

internal static class VhostStreamGen
{
    public static readonly Gen<StreamMutation> Mutation =
        from op in Gen.Frequency(
            (2, Gen.Constant(StreamOp.Drop)), (1, Gen.Constant(StreamOp.Duplicate)), (1, Gen.Constant(StreamOp.Swap)),
            (2, Gen.Constant(StreamOp.Insert)), (2, Gen.Constant(StreamOp.Request)), (2, Gen.Constant(StreamOp.Flags)),
            (2, Gen.Constant(StreamOp.SizeField)), (4, Gen.Constant(StreamOp.PayloadU32)), (4, Gen.Constant(StreamOp.PayloadU64)),
            (2, Gen.Constant(StreamOp.Resize)), (3, Gen.Constant(StreamOp.Fds)), (1, Gen.Constant(StreamOp.Truncate)),
            (1, Gen.Constant(StreamOp.RandomTail)), (1, Gen.Constant(StreamOp.RingMemory)))
        from target in Gen.Choose(0, int.MaxValue)
        from value in Gen.Choose(0, int.MaxValue)
        select new StreamMutation(op, target, value);

    public static Gen<VhostStream> Stream(int scripts, int servers) =>
        from script in Gen.Choose(0, scripts - 1)
        from server in Gen.Choose(0, servers - 1)
        from seed in RingCaseGen.U64
        from count in Gen.Frequency((1, Gen.Constant(0)), (6, Gen.Choose(1, 3)), (3, Gen.Choose(4, 10)))
        from mutations in Gen.ArrayOf(Mutation, count)
        select new VhostStream(script, server, seed, mutations);
}

/// <summary>
/// The vhost-user back-end under fuzzing: a live in-process server (one per strict mode, each with
/// its own front-end resources, so the three run side by side) on a temporary socket, fed message streams that start as valid recorded sessions (the raw
/// front-end's start-up, I/O, memory-table changes, resets) and are then mutated: request codes,
/// flags, size fields, payload fields (indices, sizes, region tables, ring addresses), descriptor
/// counts and kinds, dropped, repeated, reordered and truncated messages, trailing garbage.
/// After each stream the connection is closed and the session must end (no hang); no session or
/// ring worker may end by an unexpected exception; at the end every server must still serve a
/// valid session with a write and read round trip. No ring worker may spin: drains per session are bounded.
/// </summary>
internal sealed class VhostUserFuzzer : IDisposable
{
    public const ulong GuestBase = 0x4000_0000;
    public const ulong RamSize = 1 << 20;
    public const int QueueSize = 64;
    public static readonly TimeSpan SessionEndBound = TimeSpan.FromSeconds(10);
    public const int MaxDrainsPerSession = 500;

    private static readonly uint[] U32Values = [0, 1, 2, 3, 7, 8, 63, 64, 65, 255, 256, 257, 1024, 4096, 32768, 65535, 65536, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];

    private readonly Server _server;
    private readonly SafeFdHandle _ram;
    private readonly Mapping _ramMapping;
    private readonly SafeFdHandle _smallRam;
    private readonly EventFd[] _eventFds = [EventFd.Create(), EventFd.Create(), EventFd.Create(), EventFd.Create(), EventFd.Create(), EventFd.Create()];
    private readonly ulong[] _u64Values;
    private readonly byte[] _buffer = new byte[64 << 10];

    public static readonly StrictMode[] Modes = [StrictMode.Off, StrictMode.Warn, StrictMode.Fail];

    public VhostUserFuzzer(StrictMode strict)
    {
        _server = new Server(strict);
        _ram = MemFd.Create("fuzz-guest-ram", RamSize);
        _ramMapping = Mapping.Map(_ram, 0, RamSize);
        _smallRam = MemFd.Create("fuzz-small", 4096);
        Memory = new GuestMemory(new GuestRegion(GuestBase, RamSize, _ramMapping.Address, UserBase));
        _u64Values =
        [
            0, 1, 4096, RamSize - 1, RamSize, RamSize + 1, GuestBase, GuestBase + RamSize - 8, GuestBase + RamSize,
            UserBase, UserBase + 1, UserBase + 2, UserBase + 4, UserBase + 16, UserBase + RamSize - 1, UserBase + RamSize - 16,
            UserBase + RamSize, UserBase - 4096, ulong.MaxValue, ulong.MaxValue - 4095, 1UL << 63, 1UL << 47, 0xffff_ffff, 0x1_0000_0000,
        ];
        Scripts = BuildScripts();
    }

    public ulong UserBase => (ulong)_ramMapping.Address;
    public GuestMemory Memory { get; }
    public IReadOnlyList<SessionStep[]> Scripts { get; }
    public int Streams, Kicks, MessagesSent, PeerGoneEarly;
    public long SendTicks, EndTicks, SettleTicks;

    public ulong Desc(int q) => GuestBase + (ulong)q * 0x4000;
    public ulong Avail(int q) => Desc(q) + SplitQueueLayout.For(QueueSize).AvailRingOffset;
    public ulong Used(int q) => Desc(q) + SplitQueueLayout.For(QueueSize).UsedRingOffset;
    private static ulong Buffers(int q) => GuestBase + 0x10000 + (ulong)q * 0x4000;
    private ulong ToUser(ulong guest) => guest - GuestBase + UserBase;

    // --- the servers ---

    private sealed class Server : IDisposable
    {
        public Server(StrictMode strict)
        {
            SocketPath = Path.Combine(Path.GetTempPath(), $"vsf-{Guid.NewGuid():N}.sock"[..24]);
            if (strict == StrictMode.Warn)
            {
                // A file disk: its queue workers run reads, writes and flushes on io_uring, so the
                // streams stop, rebuild and reset rings with I/O in flight.
                _image = Path.Combine(Path.GetTempPath(), $"vsf-{Guid.NewGuid():N}.img");
                FileBackend.Create(_image, 8 << 20);
                Backend = FileBackend.Open(_image);
            }
            else
                Backend = new MemoryBackend(8 << 20);
            Device = new BlkDevice(Backend, new BlkDeviceOptions { NumQueues = 2, QueueSize = 256, Log = Log, Strict = strict });
            Counting = new CountingDevice(Device);
            Host = new VhostUserServer(Counting, SocketPath, Log);
            Host.Start();
        }

        public string SocketPath { get; }
        public FuzzLog Log { get; } = new();
        private readonly string? _image;
        public IBlockBackend Backend { get; }
        public BlkDevice Device { get; }
        public CountingDevice Counting { get; }
        public VhostUserServer Host { get; }

        public void Dispose()
        {
            Host.Dispose();
            Backend.Dispose();
            if (_image != null)
                File.Delete(_image);
        }
    }

    /// <summary>
    /// The device as the back-end sees it, counting drains: a ring worker drains once per kick (or
    /// start, or enable), so thousands of drains for a handful of kicks mean a worker that spins.
    /// </summary>
    internal sealed class CountingDevice(BlkDevice inner) : Devices.IVirtioDevice
    {
        private long _drains;
        public long Drains => Interlocked.Read(ref _drains);
        public uint DeviceId => inner.DeviceId;
        public ulong DeviceFeatures => inner.DeviceFeatures;
        public int NumQueues => inner.NumQueues;
        public ushort MaxQueueSize => inner.MaxQueueSize;
        public int ConfigSize => inner.ConfigSize;
        public BreachReporter Breaches => inner.Breaches;
        public ILogSink? Log => inner.Log;
        public void ReadConfig(int offset, Span<byte> destination) => inner.ReadConfig(offset, destination);
        public void WriteConfig(int offset, ReadOnlySpan<byte> source) => inner.WriteConfig(offset, source);
        public void Activate(ulong negotiatedFeatures) => inner.Activate(negotiatedFeatures);
        public void Reset() => inner.Reset();

        public Devices.QueueOutcome ProcessQueue(IDeviceQueue queue, Devices.IQueueIo? io)
        {
            Interlocked.Increment(ref _drains);
            return inner.ProcessQueue(queue, io);
        }

        public void CompleteIo(IDeviceQueue queue, ushort tag, int result) => inner.CompleteIo(queue, tag, result);
        public bool SupportsQueueIo => inner.SupportsQueueIo;
        public int QueueIoInFlight(int queue) => inner.QueueIoInFlight(queue);
    }

    /// <summary>Counts log lines and keeps the ones that mean a bug: an exception nobody expected.</summary>
    internal sealed class FuzzLog : ILogSink
    {
        private readonly List<string> _unexpected = [];
        private readonly List<string> _recent = [];
        public long Lines, Refusals, Closes;

        public void Write(LogLevel level, string message)
        {
            lock (_unexpected)
            {
                Lines++;
                if (message.Contains(" refused: ", StringComparison.Ordinal))
                    Refusals++;
                if (message.StartsWith("closing the connection: ", StringComparison.Ordinal))
                    Closes++;
                if (message.Contains("unexpected error", StringComparison.Ordinal) || message.Contains("accept loop stopped", StringComparison.Ordinal)
                    || message.Contains("cleaning up the connection failed", StringComparison.Ordinal))
                    _unexpected.Add(message);
                if (level >= LogLevel.Warning)
                {
                    _recent.Add(message);
                    if (_recent.Count > 200)
                        _recent.RemoveRange(0, 100);
                }
            }
        }

        public string[] Unexpected { get { lock (_unexpected) return [.. _unexpected]; } }
        public string Recent { get { lock (_unexpected) return string.Join("\n", _recent.TakeLast(20)); } }
    }

    // --- recorded sessions ---

    private static byte[] U64(ulong v) => [.. BitConverter.GetBytes(v)];

    private static byte[] State(uint index, uint num)
    {
        var b = new byte[VringState.Length];
        new VringState(index, num).Write(b);
        return b;
    }

    private byte[] Addr(int q)
    {
        var b = new byte[VringAddress.Length];
        new VringAddress((uint)q, 0, ToUser(Desc(q)), ToUser(Used(q)), ToUser(Avail(q)), 0).Write(b);
        return b;
    }

    private byte[] MemTable()
    {
        var b = new byte[MemoryTablePayload.LengthFor(1)];
        MemoryTablePayload.Write(b, [new MemoryRegionDescription(GuestBase, RamSize, UserBase, 0)]);
        return b;
    }

    private byte[] Region(ulong guest, ulong size, ulong user, ulong offset)
    {
        var b = new byte[SingleRegionPayload.Length];
        SingleRegionPayload.Write(b, new MemoryRegionDescription(guest, size, user, offset));
        return b;
    }

    private static byte[] ConfigRequest(uint offset, uint size)
    {
        var b = new byte[ConfigSpaceHeader.Length + size];
        new ConfigSpaceHeader(offset, size, 0).Write(b);
        return b;
    }

    private const uint V = VhostUserHeader.Version;
    private const uint Ack = VhostUserHeader.Version | VhostUserHeader.NeedReplyFlag;

    private static SessionStep M(VhostUserRequest r, uint flags, byte[]? payload = null, params FdKind[] fds) => new(r, flags, payload ?? [], fds);

    private IEnumerable<SessionStep> StartUp(bool protocolFeatures = true, ulong? features = null)
    {
        // The fuzzer writes split rings: everything offered but VIRTIO_F_RING_PACKED.
        var offered = (_server.Device.DeviceFeatures & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked)) | VhostUserFeatures.ProtocolFeatures;
        yield return M(VhostUserRequest.GetFeatures, V);
        if (protocolFeatures)
        {
            yield return M(VhostUserRequest.GetProtocolFeatures, V);
            yield return M(VhostUserRequest.SetProtocolFeatures, V, U64(VhostUserSession.OfferedProtocolFeatures));
            yield return M(VhostUserRequest.GetQueueNum, V);
            yield return M(VhostUserRequest.GetMaxMemSlots, V);
        }
        yield return M(VhostUserRequest.SetOwner, protocolFeatures ? Ack : V);
        yield return M(VhostUserRequest.SetFeatures, protocolFeatures ? Ack : V,
            U64(features ?? (protocolFeatures ? offered : offered & ~VhostUserFeatures.ProtocolFeatures)));
        if (protocolFeatures)
            yield return M(VhostUserRequest.GetConfig, V, ConfigRequest(0, BlkLayout.ConfigSize));
    }

    private IEnumerable<SessionStep> Ring(int q, bool protocolFeatures = true, bool err = false)
    {
        var f = protocolFeatures ? Ack : V;
        yield return M(VhostUserRequest.SetVringNum, f, State((uint)q, QueueSize));
        yield return M(VhostUserRequest.SetVringBase, f, State((uint)q, 0));
        yield return M(VhostUserRequest.SetVringAddr, f, Addr(q));
        yield return M(VhostUserRequest.SetVringCall, f, U64((ulong)q), q == 0 ? FdKind.Call0 : FdKind.Call1);
        if (err)
            yield return M(VhostUserRequest.SetVringErr, f, U64((ulong)q), FdKind.Err0);
        yield return M(VhostUserRequest.SetVringKick, f, U64((ulong)q), q == 0 ? FdKind.Kick0 : FdKind.Kick1);
        if (protocolFeatures)
            yield return M(VhostUserRequest.SetVringEnable, f, State((uint)q, 1));
    }

    /// <summary>
    /// Sessions as the raw test front-end (and QEMU) run them. Each is replayed unmutated first
    /// (<see cref="CheckScripts"/>) to prove it is valid before its mutants are trusted to mean anything.
    /// </summary>
    private SessionStep[][] BuildScripts()
    {
        var mem = M(VhostUserRequest.SetMemTable, Ack, MemTable(), FdKind.Memory);
        return
        [
            // 0: start-up, one queue, I/O, stop
            [.. StartUp(), mem, .. Ring(0), SessionStep.Kick(0), SessionStep.Kick(0), SessionStep.Kick(0),
                M(VhostUserRequest.GetVringBase, V, State(0, 0))],
            // 1: memory by slots, two queues with an error descriptor, I/O on both
            [.. StartUp(), M(VhostUserRequest.AddMemReg, Ack, Region(GuestBase, RamSize, UserBase, 0), FdKind.Memory),
                .. Ring(0, err: true), .. Ring(1), SessionStep.Kick(1), SessionStep.Kick(0), SessionStep.Kick(1),
                M(VhostUserRequest.SetVringEnable, Ack, State(1, 0)), SessionStep.Kick(0)],
            // 2: no protocol features: rings run as soon as they have a kick
            [.. StartUp(protocolFeatures: false), M(VhostUserRequest.SetMemTable, V, MemTable(), FdKind.Memory),
                .. Ring(0, protocolFeatures: false), SessionStep.Kick(0), SessionStep.Kick(0)],
            // 3: I/O, device reset, start-up again, I/O
            [.. StartUp(), mem, .. Ring(0), SessionStep.Kick(0), M(VhostUserRequest.GetVringBase, V, State(0, 0)),
                M(VhostUserRequest.ResetDevice, Ack), .. StartUp(), mem, .. Ring(0), SessionStep.Kick(0)],
            // 4: a new memory table and config write while the ring runs; a region added and removed
            [.. StartUp(), mem, .. Ring(0), SessionStep.Kick(0), mem, SessionStep.Kick(0),
                M(VhostUserRequest.AddMemReg, Ack, Region(0x1_0000_0000, 4096, 0x7000_0000_0000, 0), FdKind.SmallMemory),
                SessionStep.Kick(0), M(VhostUserRequest.RemMemReg, Ack, Region(0x1_0000_0000, 4096, 0x7000_0000_0000, 0)),
                M(VhostUserRequest.SetConfig, Ack, ConfigRequest(0, 8)), SessionStep.Kick(0)],
        ];
    }

    // --- running streams ---

    private FdKind[] AllFdKinds { get; } = Enum.GetValues<FdKind>();

    private SafeFdHandle Fd(FdKind kind) => kind switch
    {
        FdKind.Memory => _ram,
        FdKind.SmallMemory => _smallRam,
        FdKind.Kick0 => _eventFds[0].Handle,
        FdKind.Kick1 => _eventFds[1].Handle,
        FdKind.Call0 => _eventFds[2].Handle,
        FdKind.Call1 => _eventFds[3].Handle,
        FdKind.Err0 => _eventFds[4].Handle,
        _ => _eventFds[5].Handle,
    };

    /// <summary>Proves every recorded session is valid: replayed as is, every kicked request completes.</summary>
    public void CheckScripts()
    {
        for (var i = 0; i < Scripts.Count; i++)
        {
            var completed = RunStream(new VhostStream(i, 0, 0, []) { Index = -1 - i }, [.. Scripts[i]], waitForRequests: true);
            var kicks = Scripts[i].Count(s => s.IsKick);
            if (completed != kicks)
                throw new FuzzFailure($"recorded session {i} is not valid: {completed} of {kicks} requests completed\n{_server.Log.Recent}");
        }
    }

    public void Run(VhostStream stream)
    {
        var rng = new SplitMix(stream.Seed);
        var steps = Scripts[stream.Script].ToList();
        var truncateAt = -1;
        var truncateBytes = 0;
        var tails = new Dictionary<int, int>();
        var ringDamage = new Dictionary<int, int>();
        foreach (var m in stream.Mutations)
        {
            if (steps.Count == 0)
                break;
            var t = m.Target % steps.Count;
            var s = steps[t];
            switch (m.Op)
            {
                case StreamOp.Drop: steps.RemoveAt(t); break;
                case StreamOp.Duplicate: steps.Insert(t, s); break;
                case StreamOp.Swap:
                    if (t + 1 < steps.Count)
                        (steps[t], steps[t + 1]) = (steps[t + 1], steps[t]);
                    break;
                case StreamOp.Insert: steps.Insert(t, RandomMessage(ref rng, m.Value)); break;
                case StreamOp.Request: steps[t] = s with { Request = (VhostUserRequest)(m.Value % 3 == 0 ? (uint)m.Value : (uint)(m.Value % 45)) }; break;
                case StreamOp.Flags:
                    steps[t] = s with { Flags = (m.Value % 4) switch { 0 => (uint)m.Value, 1 => s.Flags ^ VhostUserHeader.NeedReplyFlag, 2 => s.Flags ^ VhostUserHeader.ReplyFlag, _ => (uint)(m.Value % 4) } };
                    break;
                case StreamOp.SizeField:
                    // A header whose size field disagrees with the bytes that follow.
                    steps[t] = s with { };
                    _sizeOverrides[steps[t]] = (m.Value % 6) switch
                    {
                        0 => (uint)Math.Max(0, s.Payload.Length - 1),
                        1 => (uint)s.Payload.Length + 1,
                        2 => (uint)s.Payload.Length + 8,
                        3 => VhostUserHeader.MaxPayload + 1u,
                        4 => uint.MaxValue,
                        _ => (uint)(m.Value % 300),
                    };
                    break;
                case StreamOp.PayloadU32:
                    if (s.Payload.Length >= 4)
                    {
                        var p = (byte[])s.Payload.Clone();
                        BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4 * (m.Value % (p.Length / 4))), U32Values[(m.Value >> 8) % U32Values.Length]);
                        steps[t] = s with { Payload = p };
                    }
                    break;
                case StreamOp.PayloadU64:
                    if (s.Payload.Length >= 8)
                    {
                        var p = (byte[])s.Payload.Clone();
                        var v = (m.Value >> 8) % 5 == 0 ? rng.Next() : _u64Values[(m.Value >> 8) % _u64Values.Length];
                        BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(8 * (m.Value % (p.Length / 8))), v);
                        steps[t] = s with { Payload = p };
                    }
                    break;
                case StreamOp.Resize:
                    {
                        var n = (m.Value % 3) switch { 0 => m.Value % Math.Max(1, s.Payload.Length), 1 => s.Payload.Length + 1 + m.Value % 64, _ => m.Value % 600 };
                        var p = new byte[n];
                        s.Payload.AsSpan(0, Math.Min(n, s.Payload.Length)).CopyTo(p);
                        rng.Fill(p.AsSpan(Math.Min(n, s.Payload.Length)));
                        steps[t] = s with { Payload = p };
                        break;
                    }
                case StreamOp.Fds:
                    {
                        FdKind[] fds = (m.Value % 5) switch
                        {
                            0 => [],
                            1 => [.. s.Fds, AllFdKinds[(m.Value >> 4) % AllFdKinds.Length]],
                            2 => [.. Enumerable.Repeat(AllFdKinds[(m.Value >> 4) % AllFdKinds.Length], 1 + (m.Value >> 8) % 20)],
                            3 => [.. s.Fds.Select(_ => AllFdKinds[(m.Value >> 4) % AllFdKinds.Length])],
                            _ => [AllFdKinds[(m.Value >> 4) % AllFdKinds.Length]],
                        };
                        steps[t] = s with { Fds = fds };
                        break;
                    }
                case StreamOp.Truncate:
                    truncateAt = t;
                    truncateBytes = m.Value;
                    break;
                case StreamOp.RandomTail:
                    tails[t] = 1 + m.Value % 200;
                    break;
                case StreamOp.RingMemory:
                    ringDamage[t] = m.Value;
                    break;
            }
        }
        RunStream(stream, steps, waitForRequests: false, truncateAt, truncateBytes, tails, ringDamage, rng.Next());
        _sizeOverrides.Clear();
    }

    private readonly Dictionary<SessionStep, uint> _sizeOverrides = new(ReferenceEqualityComparer.Instance);

    private SessionStep RandomMessage(ref SplitMix rng, int value)
    {
        var payload = new byte[value % 4 == 0 ? 0 : rng.Below(160)];
        rng.Fill(payload);
        FdKind[] fds = rng.Chance(30) ? [AllFdKinds[rng.Below(AllFdKinds.Length)]] : [];
        return new SessionStep((VhostUserRequest)(1 + value % 44), rng.Chance(50) ? Ack : V, payload, fds);
    }

    /// <summary>Runs one session on a fresh connection; returns how many kicked requests completed (when waited for).</summary>
    private int RunStream(VhostStream stream, List<SessionStep> steps, bool waitForRequests, int truncateAt = -1, int truncateBytes = 0,
        Dictionary<int, int>? tails = null, Dictionary<int, int>? ringDamage = null, ulong tailSeed = 0)
    {
        Streams++;
        var server = _server;
        var endedBefore = server.Host.SessionsEnded;
        var drainsBefore = server.Counting.Drains;
        var tailRng = new SplitMix(tailSeed);
        Memory.GetSpan(GuestBase, 0x20000).Clear();
        var rings = new[] { new SplitDriverQueue(0, QueueSize, Memory, Desc(0), Avail(0), Used(0), eventIdx: true),
                            new SplitDriverQueue(1, QueueSize, Memory, Desc(1), Avail(1), Used(1), eventIdx: true) };
        var completed = 0;
        var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        using (var socket = UnixFdSocket.Connect(server.SocketPath))
        {
            var frame = new byte[VhostUserHeader.Length + 4096 + 256];
            var answering = true;
            var kicked = false;
            for (var i = 0; i < steps.Count; i++)
            {
                var step = steps[i];
                if (ringDamage?.TryGetValue(i, out var damage) == true)
                    Damage(damage);
                if (step.IsKick)
                {
                    kicked = true;
                    Kicks++;
                    if (Kick(rings[step.KickQueue], step.KickQueue, out var head) && waitForRequests && WaitUsed(rings[step.KickQueue], head))
                        completed++;
                    continue;
                }

                var size = _sizeOverrides.TryGetValue(step, out var o) ? o : (uint)step.Payload.Length;
                new VhostUserHeader(step.Request, step.Flags, size).Write(frame);
                step.Payload.CopyTo(frame.AsSpan(VhostUserHeader.Length));
                var length = VhostUserHeader.Length + step.Payload.Length;
                if (tails?.TryGetValue(i, out var tail) == true)
                {
                    tailRng.Fill(frame.AsSpan(length, tail));
                    length += tail;
                }
                var last = i == truncateAt;
                if (last)
                    length = truncateBytes % Math.Max(1, length);
                var fds = step.Fds.Select(Fd).ToArray();
                try
                {
                    if (length > 0)
                        socket.Send(frame.AsSpan(0, length), fds);
                    MessagesSent++;
                }
                catch (NativeCallException)
                {
                    PeerGoneEarly++; // the back-end closed the connection: its answer to a broken message
                    break;
                }
                // Wait briefly for each answer, so later steps (kicks above all) meet the state earlier
                // ones made; once an answer fails to come (no REPLY_ACK, framing lost) stop waiting.
                if (answering && ((step.Flags & VhostUserHeader.NeedReplyFlag) != 0 || step.Request.AlwaysReplies()))
                    answering = FdPoll.WaitReadable(socket.Handle, waitForRequests ? 2000 : 5);
                if (!Drain(socket))
                    break;
                if (last)
                    break;
                if (i == steps.Count - 1 && !waitForRequests && answering && kicked)
                    Settle(socket);
            }
        }

        SendTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
        var t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        // Closing the connection must end the session: every ring stopped, every mapping released.
        var deadline = Environment.TickCount64 + (long)SessionEndBound.TotalMilliseconds;
        var spin = new SpinWait();
        while (server.Host.SessionsEnded == endedBefore)
        {
            if (Environment.TickCount64 > deadline)
                throw new FuzzFailure($"{stream}: the session did not end within {SessionEndBound.TotalSeconds} s of the front-end leaving (hang)\n{server.Log.Recent}");
            spin.SpinOnce();
        }
        EndTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t1;
        if (server.Log.Unexpected.Length > 0)
            throw new FuzzFailure($"{stream}: {server.Log.Unexpected[0]}");
        // Each ring drains on start, on enable, on a kick, on a call-descriptor change: a few dozen at most.
        var drains = server.Counting.Drains - drainsBefore;
        if (drains > MaxDrainsPerSession)
            throw new FuzzFailure($"{stream}: the rings drained {drains} times in one session of {steps.Count} steps: a worker spins\n{server.Log.Recent}");
        return completed;
    }

    /// <summary>
    /// Reads whatever the back-end sent (replies are not checked: a fuzzed session may fail).
    /// False when the back-end has closed the connection.
    /// </summary>
    private bool Drain(UnixFdSocket socket)
    {
        var fds = new List<SafeFdHandle>();
        try
        {
            while (FdPoll.WaitReadable(socket.Handle, 0))
            {
                var n = socket.Receive(_buffer, fds, out _);
                foreach (var fd in fds)
                    fd.Dispose();
                fds.Clear();
                if (n == 0)
                    return false;
            }
            return true;
        }
        catch (NativeCallException)
        {
            return false;
        }
    }

    /// <summary>
    /// Before leaving: a GET_FEATURES round trip shows the back-end has handled every message, then
    /// the rings get a moment to serve what was kicked, so the workers really run over the
    /// (possibly damaged) rings instead of being stopped by the disconnect first.
    /// </summary>
    private void Settle(UnixFdSocket socket)
    {
        var t = System.Diagnostics.Stopwatch.GetTimestamp();
        try { SettleInner(socket); } finally { SettleTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t; }
    }

    private void SettleInner(UnixFdSocket socket)
    {
        try
        {
            Span<byte> header = stackalloc byte[VhostUserHeader.Length];
            VhostUserHeader.ForRequest(VhostUserRequest.GetFeatures, 0).Write(header);
            socket.Send(header);
        }
        catch (NativeCallException)
        {
            return;
        }
        FdPoll.WaitReadable(socket.Handle, 20);
        if (!Drain(socket))
            return;
        var deadline = Environment.TickCount64 + 5;
        for (var q = 0; q < 2; q++)
        {
            while (BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(Used(q) + 2, 2)) != BinaryPrimitives.ReadUInt16LittleEndian(Memory.GetSpan(Avail(q) + 2, 2))
                && Environment.TickCount64 < deadline)
                Thread.Yield();
        }
    }

    /// <summary>Offers a FLUSH or a 512-byte write on queue <paramref name="q"/> and signals its kick descriptor.</summary>
    private bool Kick(SplitDriverQueue ring, int q, out ushort head)
    {
        var header = Buffers(q);
        var status = header + 16;
        var data = header + 0x1000;
        var write = (Kicks & 1) == 0;
        new BlkRequestHeader(write ? (uint)BlkRequestType.Out : (uint)BlkRequestType.Flush, 0, write ? (ulong)(Kicks % 1000) : 0)
            .Write(Memory.GetSpan(header, 16));
        Memory.GetSpan(status, 1)[0] = 0xff;
        DriverBuffer[] chain = write ? [new(header, 16, false), new(data, 512, false), new(status, 1, true)] : [new(header, 16, false), new(status, 1, true)];
        // Reclaim what came back, so the ring does not fill up (a bogus used element just stops it).
        while (ring.TryTakeUsed(out _, out _, out _))
        {
        }
        if (!ring.TryAdd(chain, out head))
            return false;
        ring.Publish();
        _eventFds[q == 0 ? 0 : 1].Signal();
        return true;
    }

    private static bool WaitUsed(SplitDriverQueue ring, ushort head)
    {
        var deadline = Environment.TickCount64 + 2000;
        while (Environment.TickCount64 < deadline)
        {
            if (ring.TryTakeUsed(out var used, out _, out _) && used == head)
                return true;
            Thread.Sleep(1);
        }
        return false;
    }

    /// <summary>Spoils the rings a little before a kick: the avail idx, a ring entry or a descriptor.</summary>
    private void Damage(int value)
    {
        var q = value & 1;
        var rng = new SplitMix((ulong)value);
        switch ((value >> 1) % 3)
        {
            case 0: BinaryPrimitives.WriteUInt16LittleEndian(Memory.GetSpan(Avail(q) + 2, 2), (ushort)rng.Next()); break;
            case 1: BinaryPrimitives.WriteUInt16LittleEndian(Memory.GetSpan(Avail(q) + 4 + 2 * (ulong)rng.Below(QueueSize), 2), (ushort)rng.Next()); break;
            default: rng.Fill(Memory.GetSpan(Desc(q) + 16 * (ulong)rng.Below(QueueSize), 16)); break;
        }
    }

    /// <summary>After everything: the server still accepts a front-end and serves a write and a read.</summary>
    public void CheckServerStillServes(Func<string, (BlkStatus Write, BlkStatus Read, bool Same)> roundTrip)
    {
        var (w, r, same) = roundTrip(_server.SocketPath);
        if (w != BlkStatus.Ok || r != BlkStatus.Ok || !same)
            throw new FuzzFailure($"server (strict {_server.Device.Breaches.Mode}) no longer serves a valid session: write {w}, read {r}, data {(same ? "ok" : "differs")}\n{_server.Log.Recent}");
    }

    /// <summary>Requests served, messages refused with REPLY_ACK, connections closed for a broken message.</summary>
    public (long Requests, long Refusals, long Closes) Reached => (_server.Device.Stats.Total, _server.Log.Refusals, _server.Log.Closes);

    public string Summary() =>
        $"strict {_server.Device.Breaches.Mode}: {Streams} streams, {MessagesSent} messages, {Kicks} kicks, {PeerGoneEarly} closed early by the back-end; "
        + $"{_server.Host.Connections} connections, {_server.Host.SessionsEnded} ended, {_server.Host.Refused} refused, {_server.Log.Lines} log lines ({_server.Log.Refusals} messages refused, {_server.Log.Closes} connections closed by the back-end), "
        + $"{_server.Counting.Drains} drains, {_server.Device.Stats.Total} requests; time sending {Seconds(SendTicks):0.0} s "
        + $"(settling {Seconds(SettleTicks):0.0} s), waiting for sessions to end {Seconds(EndTicks):0.0} s";

    private static double Seconds(long ticks) => ticks / (double)System.Diagnostics.Stopwatch.Frequency;

    public void Dispose()
    {
        _server.Dispose();
        foreach (var e in _eventFds)
            e.Dispose();
        _ramMapping.Dispose();
        _ram.Dispose();
        _smallRam.Dispose();
    }
}
