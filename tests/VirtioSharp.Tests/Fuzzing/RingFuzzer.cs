using System.Buffers.Binary;
using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>An oracle of the fuzzer caught the device misbehaving.</summary>
internal sealed class FuzzFailure(string message) : Exception(message);

/// <summary>What a fuzz run saw, for the test's output and its coverage checks.</summary>
internal sealed class RingFuzzStats
{
    public int Cases, RandomCases, MutatedCases, RingsRefused, Drains, ChainsTaken, WriteChecks, WriteChecksSkipped;
    public readonly Dictionary<QueueOutcome, int> Outcomes = [];
    public readonly Dictionary<string, long> BreachesBySection = [];
    public readonly Dictionary<MutationKind, int> MutationsApplied = [];
    public TimeSpan LongestDrain;
    public string LongestDrainCase = "";

    public override string ToString() =>
        $"{Cases} cases ({RandomCases} random, {MutatedCases} mutated recordings), {RingsRefused} rings refused at setup, "
        + $"{Drains} drains taking {ChainsTaken} chains; outcomes {string.Join(", ", Outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key} {o.Value}"))}; "
        + $"write oracle {WriteChecks} checked, {WriteChecksSkipped} skipped (writable buffer over the rings); "
        + $"longest drain {LongestDrain.TotalMilliseconds:0.0} ms; breaches by section: "
        + string.Join(", ", BreachesBySection.OrderBy(b => b.Key, StringComparer.Ordinal).Select(b => $"{b.Key} x{b.Value}"));
}

/// <summary>
/// The device half under fuzzing: <see cref="SplitDeviceQueue"/> and <see cref="BlkDevice.ProcessQueue"/>
/// over rings that are random, near-valid, or recorded from our own driver queue and mutated.
/// Guest RAM is two 64 KiB regions between guard pages (<see cref="GuardedGuestRam"/>), low in
/// the address space or ending on the last byte of it. Oracles, checked after every drain:
/// nothing thrown; every drain returns within <see cref="DrainBound"/>; every chain taken comes
/// back in the used ring (nothing left in flight, used idx moved by exactly the chains taken);
/// the device wrote nothing but the used ring and device-writable buffers. A read or write outside
/// guest memory hits a guard page and ends the process.
/// </summary>
internal sealed class RingFuzzer : IDisposable
{
    public const int Layouts = 2;
    public const ulong RegionSize = 64 << 10;
    public const ulong GuardSize = 16 << 10;
    public const ulong DiskSize = 1 << 20;
    public const ulong DiskSectors = DiskSize / BlkLayout.SectorSize;
    public static readonly TimeSpan DrainBound = TimeSpan.FromSeconds(5);

    private const ushort FNext = SplitRing.DescFNext;
    private const ushort FWrite = SplitRing.DescFWrite;
    private const ushort FIndirect = SplitRing.DescFIndirect;

    private static readonly uint[] RequestTypes = [0, 1, 4, 8, 10, 11, 13, 14, 2, 77, 0x8000_0000, uint.MaxValue];

    private readonly GuardedGuestRam[] _rams;
    private readonly ulong[][] _addresses;
    private readonly uint[][] _lengths;
    private readonly Target[] _targets;
    private readonly List<string> _files = [];
    private readonly List<RecordedRing> _recorded = [];
    private readonly Watchdog _watchdog = new(TimeSpan.FromSeconds(30));

    /// <summary>A device configuration under test; with <see cref="Io"/>, file I/O stays in flight until the drain is over.</summary>
    private sealed record Target(string Name, BlkDevice Device, IBlockBackend Backend, DeferredQueueIo? Io = null) : IDisposable
    {
        public void Dispose() => Backend.Dispose();
    }

    /// <summary>
    /// Asynchronous I/O as a queue worker lends it, held until the drain returns and then completed
    /// in a random order, some with an error or short, as a kernel might.
    /// </summary>
    private sealed unsafe class DeferredQueueIo(IBlockBackend backend) : IQueueIo
    {
        private readonly List<(char Kind, nint Iov, int Count, ulong Offset, ushort Tag)> _held = [];

        public bool Refuse;
        public bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag) => Hold('R', iov, count, offset, tag);
        public bool TryStartFlush(int fd, ushort tag) => Hold('F', null, 0, 0, tag);

        private bool Hold(char kind, IoVec* iov, int count, ulong offset, ushort tag)
        {
            if (Refuse)
                return false;
            _held.Add((kind, (nint)iov, count, offset, tag));
            return true;
        }

        public void CompleteAll(BlkDevice device, IDeviceQueue queue, ref SplitMix rng)
        {
            while (_held.Count > 0)
            {
                var i = (int)rng.Below(_held.Count);
                var (kind, iov, count, offset, tag) = _held[i];
                _held[i] = _held[^1];
                _held.RemoveAt(_held.Count - 1);
                var vectors = new ReadOnlySpan<IoVec>((void*)iov, count);
                var bytes = 0L;
                foreach (var v in vectors)
                    bytes += (long)v.Length;
                int result;
                if (rng.Chance(5))
                    result = -5; // EIO
                else if (kind == 'F')
                    result = backend.Flush() ? 0 : -5;
                else if (rng.Chance(10) && count > 0 && vectors[0].Length > 1)
                {
                    // A short read: the kernel filled only part of the first buffer; the device does the rest.
                    var part = new IoVec(vectors[0].Base, vectors[0].Length / 2);
                    result = backend.Read(offset, [part]) ? (int)part.Length : -5;
                }
                else
                    result = backend.Read(offset, vectors) ? (int)bytes : -5;
                device.CompleteIo(queue, tag, result);
            }
        }
    }

    /// <summary>A ring the fuzzer is about to run: where it is and what was negotiated.</summary>
    private readonly record struct RingSetup(GuardedGuestRam Ram, int Size, ulong Desc, ulong Avail, ulong Used, ulong Features,
        ushort Start, ushort UsedStart, int QueueIndex);

    public RingFuzzer(ulong seed, int recordings = 96)
    {
        _rams =
        [
            new GuardedGuestRam(0x1_0000_0000, RegionSize, 2, GuardSize),                      // above 4 GiB: 32-bit truncation shows
            new GuardedGuestRam(ulong.MaxValue - 2 * RegionSize + 1, RegionSize, 2, GuardSize), // the last byte is 2^64 - 1
        ];
        _addresses = [.. _rams.Select(InterestingAddresses)];
        _lengths = [.. _rams.Select(InterestingLengths)];
        _targets =
        [
            NewTarget("off, memory disk", StrictMode.Off, new MemoryBackend(DiskSize)),
            NewTarget("warn, memory disk", StrictMode.Warn, new MemoryBackend(DiskSize)),
            NewTarget("fail, memory disk", StrictMode.Fail, new MemoryBackend(DiskSize)),
            NewTarget("off, null disk", StrictMode.Off, new NullBackend(DiskSize)),
            NewTarget("warn, null disk, small discard limits, traced", StrictMode.Warn, new NullBackend(DiskSize),
                o => o with { MaxDiscardSegments = 2, MaxDiscardSectors = 8, MaxWriteZeroesSegments = 2, MaxWriteZeroesSectors = 8, Trace = new DiscardingTrace() }),
            NewTarget("fail, read-only null disk", StrictMode.Fail, new NullBackend(DiskSize, readOnly: true)),
            NewTarget("off, read-only memory disk", StrictMode.Off, new MemoryBackend(DiskSize, readOnly: true)),
            NewTarget("warn, memory disk, 4 KiB blocks, two queues", StrictMode.Warn, new MemoryBackend(DiskSize, blockSize: 4096), o => o with { NumQueues = 2 }),
            NewAsyncTarget("off, file disk, asynchronous I/O", StrictMode.Off),
            NewAsyncTarget("fail, file disk, asynchronous I/O, two queues", StrictMode.Fail, o => o with { NumQueues = 2 }),
        ];
        var rng = new SplitMix(seed ^ 0x7265636f7264UL);
        for (var i = 0; i < recordings; i++)
            _recorded.Add(Record(i, ref rng));
    }

    public int TargetCount => _targets.Length;
    public RingFuzzStats Stats { get; } = new();
    public IReadOnlyList<(string Name, BlkStats Stats)> TargetStats => [.. _targets.Select(t => (t.Name, t.Device.Stats))];

    private static Target NewTarget(string name, StrictMode strict, IBlockBackend backend, Func<BlkDeviceOptions, BlkDeviceOptions>? configure = null)
    {
        var options = new BlkDeviceOptions { QueueSize = SplitRing.MaxQueueSize, Strict = strict, Log = new DiscardingLog() };
        return new Target(name, new BlkDevice(backend, configure?.Invoke(options) ?? options), backend);
    }

    private Target NewAsyncTarget(string name, StrictMode strict, Func<BlkDeviceOptions, BlkDeviceOptions>? configure = null)
    {
        var path = Path.Combine(Path.GetTempPath(), $"vs-fuzz-{Guid.NewGuid():N}.img");
        FileBackend.Create(path, DiskSize);
        _files.Add(path);
        var backend = FileBackend.Open(path);
        var options = new BlkDeviceOptions { QueueSize = SplitRing.MaxQueueSize, Strict = strict, Log = new DiscardingLog() };
        return new Target(name, new BlkDevice(backend, configure?.Invoke(options) ?? options), backend, new DeferredQueueIo(backend));
    }

    // --- interesting values ---

    private static ulong[] InterestingAddresses(GuardedGuestRam ram)
    {
        var b = ram.GuestBase;
        var mid = ram.RegionGuestAddress(1);
        var e = ram.GuestEnd; // 0 for the top layout: one past 2^64 - 1
        var list = new List<ulong>
        {
            0, 1, 0xfff, 0x1000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000,
            1UL << 63, ulong.MaxValue, ulong.MaxValue - 15, ulong.MaxValue - 511, ulong.MaxValue - 4095,
            b, b + 1, b + 15, b - 1, b - 16, b - GuardSize, b - GuardSize - 1,
            mid - 1, mid - 16, mid - 512, mid, mid + 1,
            e - 1, e - 16, e - 20, e - 512, e - 4096, e, e + 1, e + GuardSize - 1, e + GuardSize,
            b & 0xffff_ffff, mid & 0xffff_ffff,
        };
        foreach (var (address, length) in ram.Guards)
        {
            // Host addresses used as guest addresses: a device that forgot to translate would touch these.
            list.Add((ulong)address);
            list.Add((ulong)address + length - 1);
        }
        list.Add((ulong)ram.HostAddress(0));
        list.Add((ulong)ram.HostAddress(1) + RegionSize - 1);
        return [.. list];
    }

    private static uint[] InterestingLengths(GuardedGuestRam ram) =>
    [
        0, 1, 2, 8, 15, 16, 17, 19, 20, 21, 32, 48, 100, 511, 512, 513, 1024, 1536, 4095, 4096, 8192,
        (uint)RegionSize - 1, (uint)RegionSize, (uint)RegionSize + 1, 2 * (uint)RegionSize,
        0x7fff_ffff, 0x8000_0000, 0x8000_0001, 0xffff_fff0, 0xffff_ffff,
    ];

    private static readonly ulong[] InterestingSectors =
        [0, 1, 7, 8, DiskSectors - 8, DiskSectors - 1, DiskSectors, DiskSectors + 1, 1UL << 55, (1UL << 55) - 1, 1UL << 63, ulong.MaxValue, ulong.MaxValue / 512];

    private static readonly uint[] InterestingSectorCounts = [0, 1, 2, 8, 9, 16, 1024, (uint)DiskSectors, (uint)DiskSectors + 1, 1u << 22, (1u << 22) + 1, uint.MaxValue];

    private ulong Address(int layout, ref SplitMix rng)
    {
        // Mostly somewhere plausible in RAM; otherwise an edge, a guard, or anywhere in 64 bits.
        var r = rng.Below(10);
        if (r < 6)
            return RandomSpot(_rams[layout], ref rng, (uint)rng.Below(1024));
        if (r < 9)
            return rng.Pick(_addresses[layout]);
        return rng.Next();
    }

    private uint Length(int layout, ref SplitMix rng) => rng.Below(10) switch
    {
        < 5 => (uint)rng.Below(2048),
        < 9 => rng.Pick(_lengths[layout]),
        _ => (uint)rng.Next(),
    };

    /// <summary>A guest address where <paramref name="length"/> bytes fit inside one region.</summary>
    private static ulong RandomSpot(GuardedGuestRam ram, ref SplitMix rng, uint length, uint alignment = 1)
    {
        var region = rng.Below(ram.RegionCount);
        var room = RegionSize - Math.Min(length, RegionSize);
        var offset = rng.Below(room + 1) & ~((ulong)alignment - 1);
        return ram.RegionGuestAddress(region) + offset;
    }

    // --- guest memory access (trusted: the test's own writes) ---

    private static Span<byte> Bytes(GuardedGuestRam ram, ulong address, int length) => ram.Memory.GetSpan(address, length);

    private static void WriteDesc(GuardedGuestRam ram, ulong entry, ulong address, uint length, ushort flags, ushort next)
    {
        var b = Bytes(ram, entry, SplitRing.DescriptorSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b, address);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(b[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(b[14..], next);
    }

    private static (ulong Address, uint Length, ushort Flags, ushort Next) ReadDesc(GuardedGuestRam ram, ulong entry)
    {
        var b = Bytes(ram, entry, SplitRing.DescriptorSize);
        return (BinaryPrimitives.ReadUInt64LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(b[12..]), BinaryPrimitives.ReadUInt16LittleEndian(b[14..]));
    }

    private static void WriteU16(GuardedGuestRam ram, ulong address, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Bytes(ram, address, 2), value);
    private static ushort ReadU16(GuardedGuestRam ram, ulong address) => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(ram, address, 2));

    private static void FillRandom(GuardedGuestRam ram, ref SplitMix rng)
    {
        for (var i = 0; i < ram.RegionCount; i++)
            rng.Fill(ram.Region(i));
    }

    // --- running one case ---

    public void Run(RingCase c)
    {
        Stats.Cases++;
        var rng = new SplitMix(c.Seed);
        var target = _targets[c.Target];
        RingSetup setup;
        if (c.Mutated)
        {
            Stats.MutatedCases++;
            setup = PrepareMutated(c, ref rng, target);
        }
        else
        {
            Stats.RandomCases++;
            setup = PrepareRandom(c, ref rng, target);
        }

        var device = target.Device;
        device.Breaches.Clear();
        device.Activate(setup.Features);
        var queue = SplitDeviceQueue.Create(setup.QueueIndex, setup.Size, setup.Ram.Memory, setup.Desc, setup.Avail, setup.Used,
            VirtioFeatures.Has(setup.Features, VirtioFeatures.RingEventIdx), VirtioFeatures.Has(setup.Features, VirtioFeatures.RingIndirectDesc),
            out _, setup.Start, usedStartIndex: setup.UsedStart);
        if (queue is null)
        {
            Stats.RingsRefused++;
            return;
        }

        var oracle = new WriteOracle(setup);
        // The used idx is the device's alone unless the driver's own ring parts overlap it.
        var usedIdxAt = setup.Used + 2;
        var usedIdxShared = Overlaps(usedIdxAt, 2, setup.Avail, SplitQueueLayout.AvailRingSize(setup.Size))
            || Overlaps(usedIdxAt, 2, setup.Desc, SplitQueueLayout.DescriptorTableSize(setup.Size));
        if (oracle.Active)
            Stats.WriteChecks++;
        else
            Stats.WriteChecksSkipped++;

        for (var pass = 0; pass < c.Passes; pass++)
        {
            _watchdog.Arm($"{c}, pass {pass}");
            var started = Stopwatch.GetTimestamp();
            QueueOutcome outcome;
            try
            {
                if (target.Io is not null)
                    target.Io.Refuse = rng.Chance(10); // a full submission queue: the device works synchronously
                outcome = device.ProcessQueue(queue, target.Io);
                if (target.Io is { } io)
                {
                    // The worker completes what the drain started, then publishes (as Vring.RunUring does).
                    io.CompleteAll(device, queue, ref rng);
                    if (device.QueueIoInFlight(queue.Index) != 0)
                        throw new FuzzFailure($"{c}, pass {pass}: {target.Name}: I/O left in flight after every completion");
                    queue.PublishUsed();
                }
            }
            catch (Exception e)
            {
                throw new FuzzFailure($"{c}, pass {pass}: {target.Name}: ProcessQueue threw {e}");
            }
            var elapsed = Stopwatch.GetElapsedTime(started);
            _watchdog.Disarm();
            Stats.Drains++;
            Stats.Outcomes[outcome] = Stats.Outcomes.GetValueOrDefault(outcome) + 1;
            if (elapsed > Stats.LongestDrain)
            {
                Stats.LongestDrain = elapsed;
                Stats.LongestDrainCase = c.ToString();
            }
            if (elapsed > DrainBound)
                throw new FuzzFailure($"{c}, pass {pass}: a drain took {elapsed.TotalMilliseconds:0} ms (bound {DrainBound.TotalMilliseconds} ms)");

            // 2.7.8 / the lesson of the stalled queue: every head taken is returned.
            if (queue.InFlight != 0)
                throw new FuzzFailure($"{c}, pass {pass}: {queue.InFlight} chain(s) taken and never returned");
            var taken = (ushort)(queue.LastAvailIndex - setup.Start);
            var usedIdx = ReadU16(setup.Ram, usedIdxAt);
            if (!usedIdxShared && usedIdx != (ushort)(setup.UsedStart + taken))
                throw new FuzzFailure($"{c}, pass {pass}: {taken} chains taken but used idx is {usedIdx} (started at {setup.UsedStart})");
            oracle.Verify(c, pass);

            if (pass + 1 < c.Passes)
            {
                // The driver makes more available (maybe too many, maybe going backwards) and notifies again.
                var idx = ReadU16(setup.Ram, setup.Avail + 2);
                WriteU16(setup.Ram, setup.Avail + 2, rng.Chance(80) ? (ushort)(idx + rng.Below(setup.Size + 2)) : (ushort)rng.Next());
                oracle.Snapshot();
            }
        }
        Stats.ChainsTaken += (ushort)(queue.LastAvailIndex - setup.Start);
        if (device.Breaches.Total > 0)
        {
            foreach (var (section, n) in device.Breaches.CountsBySection)
                Stats.BreachesBySection[section] = Stats.BreachesBySection.GetValueOrDefault(section) + n;
        }
    }

    private static bool Overlaps(ulong a, ulong aLength, ulong b, ulong bLength) =>
        a <= b + (bLength - 1) && b <= a + (aLength - 1);

    // --- random cases ---

    private RingSetup PrepareRandom(RingCase c, ref SplitMix rng, Target target)
    {
        var ram = _rams[c.Layout];
        var size = 1 << c.SizeLog2;
        FillRandom(ram, ref rng);
        var (desc, avail, used) = Place(ram, c.Placement, size, c.Layout, ref rng);

        var features = target.Device.DeviceFeatures & c.FeatureMask;
        if (c.FeatureMask >> 60 == 0xf)
            features |= c.FeatureMask & ~target.Device.DeviceFeatures; // bits never offered, as a broken transport might pass
        var indirect = VirtioFeatures.Has(features, VirtioFeatures.RingIndirectDesc);
        var start = c.StartIndex;

        // Only build chains where the parts are in RAM; refused placements are refused before any read.
        var inRam = ram.Memory.TryTranslate(desc, SplitQueueLayout.DescriptorTableSize(size), out _)
            && ram.Memory.TryTranslate(avail, SplitQueueLayout.AvailRingSize(size), out _)
            && ram.Memory.TryTranslate(used, SplitQueueLayout.UsedRingSize(size), out _);
        if (inRam)
        {
            for (var j = 0; j < c.Chains; j++)
            {
                var head = BuildChain(ram, c.Layout, desc, size, indirect, ref rng);
                WriteU16(ram, avail + 4 + 2 * (ulong)((start + j) & (size - 1)), head);
            }
            var idx = (ushort)(start + c.Chains);
            if (rng.Chance(10))
                idx = rng.Pick(new[] { (ushort)(start - 1), (ushort)(start + size + 1), (ushort)(start + 0x8000), (ushort)rng.Next() });
            WriteU16(ram, avail + 2, idx);
            if (rng.Chance(50))
                WriteU16(ram, avail, 0); // flags
        }
        var queueIndex = rng.Chance(3) ? target.Device.NumQueues : rng.Below(target.Device.NumQueues);
        var usedStart = (ushort)(start + c.UsedOffset);
        if (inRam)
            WriteU16(ram, used + 2, usedStart); // the used ring as the driver left it
        return new RingSetup(ram, size, desc, avail, used, features, start, usedStart, queueIndex);
    }

    private (ulong Desc, ulong Avail, ulong Used) Place(GuardedGuestRam ram, RingPlacement placement, int size, int layout, ref SplitMix rng)
    {
        var dSize = SplitQueueLayout.DescriptorTableSize(size);
        var aSize = SplitQueueLayout.AvailRingSize(size);
        var uSize = SplitQueueLayout.UsedRingSize(size);
        switch (placement)
        {
            case RingPlacement.Scattered:
                return (RandomSpot(ram, ref rng, (uint)dSize, 16), RandomSpot(ram, ref rng, (uint)aSize, 2), RandomSpot(ram, ref rng, (uint)uSize, 4));
            case RingPlacement.AtRegionEnd:
                return (ram.RegionGuestAddress(0) + RegionSize - dSize,
                    RandomSpot(ram, ref rng, (uint)aSize, 2),
                    (ram.GuestEnd - uSize) & ~3UL);
            case RingPlacement.Straddling:
                {
                    var boundary = ram.RegionGuestAddress(1);
                    var d = (boundary - dSize / 2) & ~15UL;
                    return rng.Below(3) switch
                    {
                        0 => (d, RandomSpot(ram, ref rng, (uint)aSize, 2), RandomSpot(ram, ref rng, (uint)uSize, 4)),
                        1 => (RandomSpot(ram, ref rng, (uint)dSize, 16), boundary - 2, RandomSpot(ram, ref rng, (uint)uSize, 4)),
                        _ => (RandomSpot(ram, ref rng, (uint)dSize, 16), RandomSpot(ram, ref rng, (uint)aSize, 2), boundary - 4),
                    };
                }
            case RingPlacement.Misaligned:
                {
                    var layoutOf = SplitQueueLayout.For(size);
                    var b = RandomSpot(ram, ref rng, (uint)layoutOf.TotalSize + 16, 16);
                    return rng.Below(3) switch
                    {
                        0 => (b + 8, b + 8 + layoutOf.AvailRingOffset, b + 8 + layoutOf.UsedRingOffset),
                        1 => (b, b + layoutOf.AvailRingOffset + 1, b + layoutOf.UsedRingOffset),
                        _ => (b, b + layoutOf.AvailRingOffset, b + layoutOf.UsedRingOffset + 2),
                    };
                }
            case RingPlacement.Anywhere:
                return (rng.Pick(_addresses[layout]) & ~15UL, rng.Pick(_addresses[layout]) & ~1UL, rng.Pick(_addresses[layout]) & ~3UL);
            default:
                {
                    var l = SplitQueueLayout.For(size);
                    var b = RandomSpot(ram, ref rng, (uint)l.TotalSize, 16);
                    return (b + l.DescriptorTableOffset, b + l.AvailRingOffset, b + l.UsedRingOffset);
                }
        }
    }

    /// <summary>
    /// Writes one near-valid chain (header, data, status, the flags a request type wants) into
    /// descriptors of the table, each field sometimes swapped for an interesting value, and
    /// returns its head. With INDIRECT negotiated, some chains go through an indirect table.
    /// </summary>
    private ushort BuildChain(GuardedGuestRam ram, int layout, ulong desc, int size, bool indirect, ref SplitMix rng)
    {
        var type = rng.Pick(RequestTypes);
        var count = rng.Below(10) switch { < 7 => 2 + rng.Below(3), < 9 => 1 + rng.Below(8), _ => size + rng.Below(3) };
        var head = (ushort)rng.Below(size);
        var useIndirect = (indirect && rng.Chance(35)) || rng.Chance(3);
        if (useIndirect)
        {
            // Zero or more direct descriptors, then one that refers to a table (2.7.5.3.2 allows both).
            var entries = Math.Max(count, 1);
            var table = RandomSpot(ram, ref rng, (uint)(entries * SplitRing.DescriptorSize), rng.Chance(90) ? 16u : 1u);
            for (var k = 0; k < entries; k++)
                WriteEntry(ram, layout, table + (ulong)(k * SplitRing.DescriptorSize), k, entries, type, (ushort)(k + 1), ref rng, inIndirect: true);
            var flags = (ushort)(FIndirect | (rng.Chance(5) ? FNext : 0) | (rng.Chance(10) ? FWrite : 0));
            var len = rng.Chance(85) ? (uint)(entries * SplitRing.DescriptorSize) : Length(layout, ref rng);
            if (rng.Chance(30) && size > 1)
            {
                // A direct header first, then the table.
                var second = (ushort)((head + 1 + rng.Below(size - 1)) % size);
                WriteDesc(ram, desc + head * 16UL, PlantHeader(ram, type, ref rng), 16, FNext, second);
                WriteDesc(ram, desc + second * 16UL, rng.Chance(95) ? table : Address(layout, ref rng), len, flags, (ushort)rng.Below(size + 1));
            }
            else
                WriteDesc(ram, desc + head * 16UL, rng.Chance(95) ? table : Address(layout, ref rng), len, flags, (ushort)rng.Below(size + 1));
            return head;
        }

        var index = head;
        for (var k = 0; k < count; k++)
        {
            var next = rng.Below(10) switch { < 8 => (ushort)rng.Below(size), < 9 => head, _ => (ushort)rng.Below(size + 3) };
            WriteEntry(ram, layout, desc + index * 16UL, k, count, type, next, ref rng, inIndirect: false);
            index = next;
            if (index >= size)
                break;
        }
        return head;
    }

    /// <summary>Entry <paramref name="k"/> of <paramref name="count"/> of a request of <paramref name="type"/>.</summary>
    private void WriteEntry(GuardedGuestRam ram, int layout, ulong entry, int k, int count, uint type, ushort next, ref SplitMix rng, bool inIndirect)
    {
        if (rng.Chance(8))
        {
            // Pure garbage.
            WriteDesc(ram, entry, Address(layout, ref rng), Length(layout, ref rng), (ushort)rng.Next(), (ushort)rng.Next());
            return;
        }
        var last = k == count - 1;
        var deviceWrites = type is 0 or 8;
        ulong address;
        uint length;
        bool writable;
        if (k == 0 && count > 1)
        {
            address = PlantHeader(ram, type, ref rng);
            length = rng.Chance(85) ? 16u : rng.Pick(new uint[] { 8, 15, 17, 32, 0 });
            writable = rng.Chance(3);
        }
        else if (last)
        {
            length = rng.Chance(85) ? 1u : Length(layout, ref rng);
            address = rng.Chance(85) ? RandomSpot(ram, ref rng, Math.Min(length, (uint)RegionSize)) : Address(layout, ref rng);
            writable = rng.Chance(95);
        }
        else
        {
            length = rng.Below(10) switch
            {
                < 4 => (uint)(512 * (1 + rng.Below(8))),
                < 6 => (uint)(BlkLayout.DiscardSegmentSize * (1 + rng.Below(4))),
                < 7 => 20,
                _ => Length(layout, ref rng),
            };
            address = rng.Chance(85) ? RandomSpot(ram, ref rng, Math.Min(length, (uint)RegionSize)) : Address(layout, ref rng);
            writable = deviceWrites ? rng.Chance(95) : rng.Chance(5);
            if (type is 11 or 13 && !writable && ram.Memory.TryTranslate(address, length, out _))
                PlantSegments(ram, address, length, ref rng);
        }
        var flags = (ushort)((writable ? FWrite : 0) | (last ? 0 : FNext));
        if (rng.Chance(3))
            flags ^= (ushort)(1 << rng.Below(3));
        if (inIndirect && rng.Chance(2))
            flags |= FIndirect;
        WriteDesc(ram, entry, address, length, flags, next);
    }

    /// <summary>A request header at a random spot: a known type or not, a sector in range or at an edge.</summary>
    private static ulong PlantHeader(GuardedGuestRam ram, uint type, ref SplitMix rng)
    {
        var at = RandomSpot(ram, ref rng, BlkLayout.HeaderSize);
        var sector = rng.Chance(70) ? rng.Below(DiskSectors) : rng.Pick(InterestingSectors);
        if (type == 4 && rng.Chance(80))
            sector = 0;
        new BlkRequestHeader(type, rng.Chance(90) ? 0 : (uint)rng.Next(), sector).Write(Bytes(ram, at, BlkLayout.HeaderSize));
        return at;
    }

    private static void PlantSegments(GuardedGuestRam ram, ulong address, uint length, ref SplitMix rng)
    {
        var segments = Math.Min(length / BlkLayout.DiscardSegmentSize, 64u);
        for (var s = 0u; s < segments; s++)
        {
            var sector = rng.Chance(70) ? rng.Below(DiskSectors) : rng.Pick(InterestingSectors);
            var n = rng.Chance(70) ? (uint)(1 + rng.Below(16)) : rng.Pick(InterestingSectorCounts);
            var flags = rng.Below(10) switch { < 7 => 0u, < 9 => BlkLayout.SegmentFlagUnmap, _ => (uint)rng.Next() };
            new BlkDiscardSegment(sector, n, flags).Write(Bytes(ram, address + s * BlkLayout.DiscardSegmentSize, BlkLayout.DiscardSegmentSize));
        }
    }

    // --- recorded valid rings, then mutated ---

    /// <summary>A ring our own driver queue filled with valid requests, as bytes to restore and fields to mutate.</summary>
    private sealed class RecordedRing
    {
        public required int Layout;
        public required int Size;
        public required ulong Desc, Avail, Used, Features;
        public required ushort Start;
        public required int Requests;
        public required byte[][] Snapshot;
        public required ulong[] Descriptors;     // table entries (direct and indirect) the requests use
        public required ulong[] Heads;           // descriptor index of each head, as entry addresses
        public required ulong[] Headers;
        public required ulong[] Segments;
    }

    private RecordedRing Record(int n, ref SplitMix rng)
    {
        var layout = n % Layouts;
        var ram = _rams[layout];
        var size = 1 << (1 + rng.Below(8)); // 2..256: a blk request needs at least two descriptors
        var eventIdx = rng.Chance(50);
        var indirect = rng.Chance(60);
        FillRandom(ram, ref rng);

        var l = SplitQueueLayout.For(size);
        var ringBase = RandomSpot(ram, ref rng, (uint)l.TotalSize, 4096) & ~4095UL;
        if (!ram.Memory.TryTranslate(ringBase, l.TotalSize, out _))
            ringBase = ram.RegionGuestAddress(0);
        Bytes(ram, ringBase, (int)l.TotalSize).Clear();
        var desc = ringBase + l.DescriptorTableOffset;
        var avail = ringBase + l.AvailRingOffset;
        var used = ringBase + l.UsedRingOffset;
        var driver = new SplitDriverQueue(0, size, ram.Memory, desc, avail, used, eventIdx);

        // Buffers in the other region, or after the rings; headers and status bytes at random.
        var otherRegion = ram.RegionGuestAddress(ram.RegionGuestAddress(0) == (ringBase & ~(RegionSize - 1)) ? 1 : 0);
        var heapStart = otherRegion + (rng.Below(RegionSize / 2) & ~15UL);
        var heap = new global::VirtioSharp.Memory.GuestAllocator(ram.Memory, heapStart, otherRegion + RegionSize - heapStart);

        var headers = new List<ulong>();
        var segments = new List<ulong>();
        var heads = new List<ushort>();
        var wanted = 1 + rng.Below(Math.Min(size, 12));
        for (var r = 0; r < wanted; r++)
        {
            if (!TryAddRequest(ram, driver, heap, indirect, size, ref rng, headers, segments, out var head))
                break;
            heads.Add(head);
        }
        driver.Publish();

        // Move the published entries to where a device at start index S reads them.
        var start = rng.Chance(40) ? (ushort)(65_535 - rng.Below(heads.Count + 2)) : (ushort)rng.Below(65_536);
        for (var j = 0; j < size; j++)
            WriteU16(ram, avail + 4 + 2 * (ulong)j, 0);
        for (var j = 0; j < heads.Count; j++)
            WriteU16(ram, avail + 4 + 2 * (ulong)((start + j) & (size - 1)), heads[j]);
        WriteU16(ram, avail + 2, (ushort)(start + heads.Count));
        WriteU16(ram, used + 2, start);

        var features = _targets[0].Device.DeviceFeatures;
        if (!eventIdx)
            features &= ~VirtioFeatures.Bit(VirtioFeatures.RingEventIdx);
        if (!indirect)
            features &= ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);

        var descriptors = new List<ulong>();
        foreach (var h in heads)
        {
            var i = h;
            for (var k = 0; k < size; k++)
            {
                descriptors.Add(desc + i * 16UL);
                var (a, len, flags, next) = ReadDesc(ram, desc + i * 16UL);
                if ((flags & FIndirect) != 0)
                {
                    for (var e = 0u; e < len / 16; e++)
                        descriptors.Add(a + e * 16);
                    break;
                }
                if ((flags & FNext) == 0)
                    break;
                i = next;
            }
        }

        var recorded = new RecordedRing
        {
            Layout = layout,
            Size = size,
            Desc = desc,
            Avail = avail,
            Used = used,
            Features = features,
            Start = start,
            Requests = heads.Count,
            Snapshot = [ram.Region(0).ToArray(), ram.Region(1).ToArray()],
            Descriptors = descriptors.Count > 0 ? [.. descriptors] : [.. Enumerable.Range(0, size).Select(i => desc + (ulong)i * 16)],
            Heads = [.. heads.Select(h => desc + h * 16UL)],
            Headers = [.. headers],
            Segments = [.. segments],
        };
        CheckRecording(recorded);
        return recorded;
    }

    /// <summary>Adds one valid request of a random type; false when descriptors or memory ran out.</summary>
    private static bool TryAddRequest(GuardedGuestRam ram, SplitDriverQueue driver, global::VirtioSharp.Memory.GuestAllocator heap, bool indirect, int size,
        ref SplitMix rng, List<ulong> headers, List<ulong> segments, out ushort head)
    {
        head = 0;
        try
        {
            var type = rng.Pick(new[] { BlkRequestType.In, BlkRequestType.Out, BlkRequestType.Flush, BlkRequestType.GetId,
                BlkRequestType.Discard, BlkRequestType.WriteZeroes, (BlkRequestType)77 });
            var buffers = new List<DriverBuffer>();
            var header = heap.Allocate(BlkLayout.HeaderSize);
            var sector = type == BlkRequestType.Flush ? 0 : rng.Below(DiskSectors - 64);
            new BlkRequestHeader((uint)type, 0, sector).Write(Bytes(ram, header, BlkLayout.HeaderSize));
            headers.Add(header);
            if (rng.Chance(20))
            {
                buffers.Add(new(header, 8, false)); // any layout: a header in two pieces
                buffers.Add(new(header + 8, 8, false));
            }
            else
                buffers.Add(new(header, BlkLayout.HeaderSize, false));

            switch (type)
            {
                case BlkRequestType.In:
                case BlkRequestType.Out:
                    {
                        var pieces = 1 + rng.Below(3);
                        for (var p = 0; p < pieces; p++)
                        {
                            var len = (uint)(512 * (1 + rng.Below(4)));
                            buffers.Add(new(heap.Allocate(len, 512), len, type == BlkRequestType.In));
                        }
                        break;
                    }
                case BlkRequestType.GetId:
                    buffers.Add(new(heap.Allocate(BlkLayout.IdBytes), BlkLayout.IdBytes, true));
                    break;
                case BlkRequestType.Discard:
                case BlkRequestType.WriteZeroes:
                    {
                        var count = 1 + rng.Below(2);
                        var at = heap.Allocate((ulong)(count * BlkLayout.DiscardSegmentSize));
                        for (var s = 0; s < count; s++)
                        {
                            var flags = type == BlkRequestType.WriteZeroes && rng.Chance(50) ? BlkLayout.SegmentFlagUnmap : 0;
                            new BlkDiscardSegment(rng.Below(DiskSectors - 16), (uint)(1 + rng.Below(8)), flags)
                                .Write(Bytes(ram, at + (ulong)(s * BlkLayout.DiscardSegmentSize), BlkLayout.DiscardSegmentSize));
                            segments.Add(at + (ulong)(s * BlkLayout.DiscardSegmentSize));
                        }
                        buffers.Add(new(at, (uint)(count * BlkLayout.DiscardSegmentSize), false));
                        break;
                    }
            }
            var status = heap.Allocate(1);
            Bytes(ram, status, 1)[0] = 0xff;
            buffers.Add(new(status, 1, true));

            if (indirect && buffers.Count < size && rng.Chance(40))
            {
                var table = heap.Allocate((ulong)(buffers.Count * SplitRing.DescriptorSize));
                SplitDriverQueue.WriteIndirectTable(Bytes(ram, table, buffers.Count * SplitRing.DescriptorSize), [.. buffers]);
                return driver.TryAddIndirect(table, buffers.Count, out head);
            }
            return driver.TryAdd([.. buffers], out head);
        }
        catch (InsufficientMemoryException)
        {
            return false;
        }
    }

    /// <summary>Before any mutation, the recording must be served in full with no breach (strict=fail).</summary>
    private void CheckRecording(RecordedRing r)
    {
        var ram = _rams[r.Layout];
        var target = _targets[2];
        target.Device.Breaches.Clear();
        target.Device.Activate(r.Features);
        var queue = SplitDeviceQueue.Create(0, r.Size, ram.Memory, r.Desc, r.Avail, r.Used,
            VirtioFeatures.Has(r.Features, VirtioFeatures.RingEventIdx), VirtioFeatures.Has(r.Features, VirtioFeatures.RingIndirectDesc),
            out var error, r.Start) ?? throw new InvalidOperationException($"recorded ring refused: {error}");
        var outcome = target.Device.ProcessQueue(queue);
        if (outcome == QueueOutcome.NeedsReset || target.Device.Breaches.Total != 0 || (ushort)(queue.LastAvailIndex - r.Start) != r.Requests)
            throw new InvalidOperationException($"a valid recorded ring was not served: {outcome}, {target.Device.Breaches.Summary()}, "
                + $"{(ushort)(queue.LastAvailIndex - r.Start)} of {r.Requests} taken");
    }

    private RingSetup PrepareMutated(RingCase c, ref SplitMix rng, Target target)
    {
        var r = _recorded[(int)(c.Seed % (ulong)_recorded.Count)];
        var ram = _rams[r.Layout];
        r.Snapshot[0].CopyTo(ram.Region(0));
        r.Snapshot[1].CopyTo(ram.Region(1));
        var features = r.Features & (target.Device.DeviceFeatures | VirtioFeatures.Bit(VirtioFeatures.RingEventIdx) | VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc));
        var usedStart = r.Start;
        foreach (var m in c.Mutations)
        {
            Stats.MutationsApplied[m.Kind] = Stats.MutationsApplied.GetValueOrDefault(m.Kind) + 1;
            Mutate(r, ram, m, ref rng, ref features, ref usedStart);
        }
        WriteU16(ram, r.Used + 2, usedStart);
        return new RingSetup(ram, r.Size, r.Desc, r.Avail, r.Used, features, r.Start, usedStart, 0);
    }

    private static readonly int[] FeatureBitsToToggle =
        [VirtioFeatures.RingIndirectDesc, VirtioFeatures.RingEventIdx, BlkFeatures.Discard, BlkFeatures.WriteZeroes, BlkFeatures.Flush, BlkFeatures.Ro];

    private void Mutate(RecordedRing r, GuardedGuestRam ram, Mutation m, ref SplitMix rng, ref ulong features, ref ushort usedStart)
    {
        var descs = r.Descriptors;
        ulong PickDesc(int t) => descs[t % descs.Length];
        ulong Slot(int j) => r.Avail + 4 + 2 * (ulong)((r.Start + j) & (r.Size - 1));
        var span = Math.Max(r.Requests, 1);
        switch (m.Kind)
        {
            case MutationKind.FlipBit:
                {
                    var fields = descs.Length + r.Headers.Length + r.Segments.Length + 1;
                    var f = m.Target % fields;
                    var (at, len) = f < descs.Length ? (descs[f], 16)
                        : f < descs.Length + r.Headers.Length ? (r.Headers[f - descs.Length], 16)
                        : f < fields - 1 ? (r.Segments[f - descs.Length - r.Headers.Length], 16)
                        : (r.Avail + 2, 2);
                    Bytes(ram, at + (ulong)(m.Value % len), 1)[0] ^= (byte)(1 << ((m.Value >> 8) & 7));
                    break;
                }
            case MutationKind.DescAddress:
                {
                    var e = PickDesc(m.Target);
                    var d = ReadDesc(ram, e);
                    var a = m.Value % 3 == 0 ? d.Address + (ulong)(m.Value % 64) - 32 : _addresses[r.Layout][m.Value % _addresses[r.Layout].Length];
                    WriteDesc(ram, e, a, d.Length, d.Flags, d.Next);
                    break;
                }
            case MutationKind.DescLength:
                {
                    var e = PickDesc(m.Target);
                    var d = ReadDesc(ram, e);
                    var len = m.Value % 3 == 0 ? d.Length + (uint)(m.Value % 5) - 2 : _lengths[r.Layout][m.Value % _lengths[r.Layout].Length];
                    WriteDesc(ram, e, d.Address, len, d.Flags, d.Next);
                    break;
                }
            case MutationKind.DescFlags:
                {
                    var e = PickDesc(m.Target);
                    var d = ReadDesc(ram, e);
                    var flags = (m.Value % 4) switch
                    {
                        0 => (ushort)(m.Value % 8),
                        1 => (ushort)(d.Flags ^ (1 << (m.Value % 3))),
                        2 => (ushort)(d.Flags | FIndirect),
                        _ => (ushort)m.Value,
                    };
                    WriteDesc(ram, e, d.Address, d.Length, flags, d.Next);
                    break;
                }
            case MutationKind.DescNext:
                {
                    var e = PickDesc(m.Target);
                    var d = ReadDesc(ram, e);
                    var next = (m.Value % 3) switch { 0 => (ushort)(m.Value % (r.Size + 2)), 1 => (ushort)(r.Size - 1 + m.Value % 3), _ => (ushort)m.Value };
                    WriteDesc(ram, e, d.Address, d.Length, d.Flags, next);
                    break;
                }
            case MutationKind.AvailIdx:
                {
                    var values = new[] { r.Start + r.Requests - 1, r.Start + r.Requests + 1, r.Start + r.Size, r.Start + r.Size + 1, r.Start - 1, r.Start + 0x8000, m.Value, r.Start };
                    WriteU16(ram, r.Avail + 2, (ushort)values[m.Target % values.Length]);
                    break;
                }
            case MutationKind.AvailEntry:
                {
                    var values = new[] { r.Size, r.Size - 1, 0, m.Value & 0xffff, 0xffff, (int)ReadU16(ram, Slot(m.Value % span)) };
                    WriteU16(ram, Slot(m.Target % span), (ushort)values[m.Value % values.Length]);
                    break;
                }
            case MutationKind.SwapAvail:
                {
                    var a = Slot(m.Target % span);
                    var b = Slot(m.Value % span);
                    var va = ReadU16(ram, a);
                    WriteU16(ram, a, ReadU16(ram, b));
                    WriteU16(ram, b, va);
                    break;
                }
            case MutationKind.DuplicateHead:
                WriteU16(ram, Slot(m.Target % span), ReadU16(ram, Slot(m.Value % span)));
                break;
            case MutationKind.SwapDescriptors:
                {
                    var a = Bytes(ram, PickDesc(m.Target), 16);
                    var b = Bytes(ram, PickDesc(m.Value), 16);
                    Span<byte> t = stackalloc byte[16];
                    a.CopyTo(t);
                    b.CopyTo(a);
                    t.CopyTo(b);
                    break;
                }
            case MutationKind.HeaderType:
                if (r.Headers.Length > 0)
                    BinaryPrimitives.WriteUInt32LittleEndian(Bytes(ram, r.Headers[m.Target % r.Headers.Length], 4), RequestTypes[m.Value % RequestTypes.Length]);
                break;
            case MutationKind.HeaderSector:
                if (r.Headers.Length > 0)
                    BinaryPrimitives.WriteUInt64LittleEndian(Bytes(ram, r.Headers[m.Target % r.Headers.Length] + 8, 8), InterestingSectors[m.Value % InterestingSectors.Length]);
                break;
            case MutationKind.SegmentField:
                if (r.Segments.Length > 0)
                {
                    var s = r.Segments[m.Target % r.Segments.Length];
                    switch (m.Value % 3)
                    {
                        case 0: BinaryPrimitives.WriteUInt64LittleEndian(Bytes(ram, s, 8), InterestingSectors[(m.Value >> 2) % InterestingSectors.Length]); break;
                        case 1: BinaryPrimitives.WriteUInt32LittleEndian(Bytes(ram, s + 8, 4), InterestingSectorCounts[(m.Value >> 2) % InterestingSectorCounts.Length]); break;
                        default: BinaryPrimitives.WriteUInt32LittleEndian(Bytes(ram, s + 12, 4), (uint)(m.Value >> 2) % 4); break;
                    }
                }
                break;
            case MutationKind.MakeLoop:
                {
                    // Point a descriptor back at a head, NEXT set: a loop through the table.
                    var e = PickDesc(m.Target);
                    var d = ReadDesc(ram, e);
                    var headEntry = r.Heads.Length > 0 ? r.Heads[m.Value % r.Heads.Length] : r.Desc;
                    WriteDesc(ram, e, d.Address, d.Length, (ushort)((d.Flags | FNext) & ~FIndirect), (ushort)((headEntry - r.Desc) / 16));
                    break;
                }
            case MutationKind.RandomBytes:
                rng.Fill(Bytes(ram, PickDesc(m.Target), 16));
                break;
            case MutationKind.ToggleFeature:
                features ^= VirtioFeatures.Bit(FeatureBitsToToggle[m.Value % FeatureBitsToToggle.Length]);
                break;
            case MutationKind.UsedIndex:
                usedStart = (ushort)m.Value;
                break;
        }
    }

    public void Dispose()
    {
        _watchdog.Dispose();
        foreach (var t in _targets)
            t.Dispose();
        foreach (var r in _rams)
            r.Dispose();
        foreach (var f in _files)
            File.Delete(f);
    }

    /// <summary>
    /// Checks that a drain wrote only the used ring and device-writable buffers (2.7.5.1: never a
    /// descriptor, never a device-readable buffer). Writable ranges are every descriptor with
    /// VIRTQ_DESC_F_WRITE in the table and in any indirect table a descriptor refers to, a superset
    /// of what the device may touch. Skipped when a writable buffer or the used ring overlaps the
    /// descriptor table, the available ring or an indirect table: then the device's legitimate
    /// writes can change the chains under it.
    /// </summary>
    private sealed class WriteOracle
    {
        // Inclusive ranges: a buffer may end on the last byte of the address space.
        private readonly RingSetup _s;
        private readonly List<(ulong First, ulong Last)> _allowed = [];
        private byte[][] _before = [];

        public WriteOracle(RingSetup s)
        {
            _s = s;
            var memory = s.Ram.Memory;
            var isProtected = new List<(ulong First, ulong Last)>
            {
                (s.Desc, s.Desc + SplitQueueLayout.DescriptorTableSize(s.Size) - 1),
                (s.Avail, s.Avail + SplitQueueLayout.AvailRingSize(s.Size) - 1),
            };
            _allowed.Add((s.Used, s.Used + SplitQueueLayout.UsedRingSize(s.Size) - 1));
            for (var i = 0; i < s.Size; i++)
            {
                var (a, len, flags, _) = ReadDesc(s.Ram, s.Desc + (ulong)i * 16);
                if ((flags & FIndirect) != 0)
                {
                    if (len == 0 || len % 16 != 0 || !memory.TryTranslate(a, len, out _))
                        continue;
                    isProtected.Add((a, a + len - 1));
                    for (var e = 0u; e < len / 16; e++)
                    {
                        var (ea, elen, eflags, _) = ReadDesc(s.Ram, a + e * 16);
                        AddWritable(memory, ea, elen, eflags);
                    }
                }
                else
                    AddWritable(memory, a, len, flags);
            }
            foreach (var w in _allowed)
            {
                foreach (var p in isProtected)
                {
                    if (w.First <= p.Last && p.First <= w.Last)
                        return; // inactive
                }
            }
            _allowed.Sort();
            Active = true;
            Snapshot();
        }

        public bool Active { get; }

        private void AddWritable(global::VirtioSharp.Memory.GuestMemory memory, ulong address, uint length, ushort flags)
        {
            if ((flags & FWrite) != 0 && (flags & FIndirect) == 0 && length != 0 && memory.TryTranslate(address, length, out _))
                _allowed.Add((address, address + (length - 1)));
        }

        public void Snapshot()
        {
            if (Active)
                _before = [_s.Ram.Region(0).ToArray(), _s.Ram.Region(1).ToArray()];
        }

        public void Verify(RingCase c, int pass)
        {
            if (!Active)
                return;
            for (var r = 0; r < _before.Length; r++)
            {
                var before = _before[r].AsSpan();
                var after = _s.Ram.Region(r);
                var regionStart = _s.Ram.RegionGuestAddress(r);
                var pos = 0;
                while (pos < before.Length)
                {
                    pos += before[pos..].CommonPrefixLength(after[pos..]);
                    if (pos >= before.Length)
                        break;
                    var guest = regionStart + (ulong)pos;
                    if (!AllowedLast(guest, out var last))
                        throw new FuzzFailure($"{c}, pass {pass}: the device wrote guest 0x{guest:x} (byte 0x{before[pos]:x2} -> 0x{after[pos]:x2}), "
                            + "which is neither the used ring nor a device-writable buffer");
                    pos = (int)Math.Min((ulong)before.Length, last - regionStart + 1);
                }
            }
        }

        /// <summary>Last byte of the allowed ranges holding <paramref name="guest"/> (ranges may overlap).</summary>
        private bool AllowedLast(ulong guest, out ulong last)
        {
            var found = false;
            last = 0;
            foreach (var (first, end) in _allowed)
            {
                if (first > guest)
                    break;
                if (guest <= end && (!found || end > last))
                {
                    last = end;
                    found = true;
                }
            }
            return found;
        }
    }

    private sealed class DiscardingLog : ILogSink
    {
        public long Lines;
        public void Write(LogLevel level, string message) => Lines++;
    }

    private sealed class DiscardingTrace : ITraceSink
    {
        public long Steps;
        public bool Active => true;
        public void Step(string actor, string text) => Steps++;
    }
}
