using FsCheck;
using FsCheck.Fluent;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Properties;

/// <summary>
/// Random workloads through the whole machine (<see cref="BlkDriver"/>, virtio-mmio, device and IRQ
/// threads, <see cref="BlkDevice"/> on a <see cref="MemoryBackend"/>) with random queue sizes,
/// depths, ring features and request mixes; every byte is compared with an in-memory model.
/// </summary>
public sealed class MachinePropertyTests
{
    private const int DiskSectors = 1024; // 512 KiB
    private const int Sector = 512;

    public enum Kind { Read, Write, Flush, Discard, WriteZeroes }

    public sealed record Op(Kind Kind, int Sector, int Sectors, int Seed)
    {
        public override string ToString() => Kind == Kind.Flush ? "flush" : $"{Kind} {Sector}+{Sectors}";
    }

    public sealed record Workload(int QueueSize, int Depth, bool Indirect, bool EventIdx, int MaxTransfer, Op[] Ops, bool Packed = false)
    {
        public override string ToString() =>
            $"{(Packed ? "packed" : "split")} queue {QueueSize}, depth {Depth}, indirect {Indirect}, event idx {EventIdx}, max transfer {MaxTransfer}: {string.Join(", ", Ops.Select(o => o.ToString()))}";
    }

    private static readonly Gen<Op> Ops =
        from kind in Gen.Frequency(
            (5, Gen.Constant(Kind.Read)), (5, Gen.Constant(Kind.Write)), (1, Gen.Constant(Kind.Flush)),
            (1, Gen.Constant(Kind.Discard)), (1, Gen.Constant(Kind.WriteZeroes)))
        from sector in Gen.Choose(0, DiskSectors - 1)
        from sectors in Gen.Frequency((4, Gen.Choose(1, 8)), (2, Gen.Choose(1, 64)), (1, Gen.Choose(1, 300)))
        from seed in Gen.Choose(0, int.MaxValue)
        select new Op(kind, sector, Math.Min(sectors, DiskSectors - sector), seed);

    private static readonly Gen<Workload> Workloads =
        from sizeLog in Gen.Choose(2, 10)                       // queue size 4..1024
        from depth in Gen.Frequency((2, Gen.Choose(1, 4)), (3, Gen.Choose(1, 64)))
        from indirect in Gen.Elements(true, false)
        from eventIdx in Gen.Elements(true, false)
        from maxTransfer in Gen.Elements(512, 4096, 16384, 65536)
        from count in Gen.Choose(1, 80)
        from ops in Gen.ArrayOf(Ops, count)
        select new Workload(1 << sizeLog, depth, indirect, eventIdx, maxTransfer, ops);

    [Fact]
    public void Random_workloads_match_a_byte_model_5_2_6()
    {
        var property = Prop.ForAll(Arb.From(Workloads), w => Run(w).GetAwaiter().GetResult());
        Check.One(PropertyConfig.For(40), property);
    }

    // The same workloads over packed rings (2.8), of any size the driver asks for (2.8.10.1).
    private static readonly Gen<Workload> PackedWorkloads =
        from w in Workloads
        from size in Gen.Frequency((3, Gen.Choose(3, 40)), (2, Gen.Choose(41, 700)))
        select w with { QueueSize = size, Packed = true };

    [Fact]
    public void Random_workloads_over_packed_rings_match_a_byte_model_2_8()
    {
        var property = Prop.ForAll(Arb.From(PackedWorkloads), w => Run(w).GetAwaiter().GetResult());
        Check.One(PropertyConfig.For(40), property);
    }

    private static bool Overlaps(Op a, Op b) =>
        a.Kind != Kind.Flush && b.Kind != Kind.Flush && a.Sector < b.Sector + b.Sectors && b.Sector < a.Sector + a.Sectors;

    private static bool Conflict(Op a, Op b) => Overlaps(a, b) && (a.Kind != Kind.Read || b.Kind != Kind.Read);

    private static byte[] Data(Op op)
    {
        var b = new byte[op.Sectors * Sector];
        new Random(op.Seed).NextBytes(b);
        return b;
    }

    private static async Task<bool> Run(Workload w)
    {
        var accept = BlkDriver.SupportedFeatures;
        if (!w.Indirect)
            accept &= ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);
        if (!w.EventIdx)
            accept &= ~VirtioFeatures.Bit(VirtioFeatures.RingEventIdx);
        var backend = new MemoryBackend(DiskSectors * Sector);
        var deviceQueueSize = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)w.QueueSize);
        using var rig = new MachineRig(backend, queueSize: deviceQueueSize, maxTransfer: w.MaxTransfer,
            driver: new BlkDriverOptions { AcceptFeatures = accept, Ring = w.Packed ? RingChoice.RequirePacked : RingChoice.Split },
            driverQueueSize: w.QueueSize);
        var driver = rig.Driver;
        Assert.Equal(w.QueueSize, driver.QueueSize(0));
        Assert.Equal(w.Packed ? VirtioSharp.Queues.VirtqueueFormat.Packed : VirtioSharp.Queues.VirtqueueFormat.Split, driver.RingFormat);
        Assert.Equal(w.MaxTransfer, driver.ChunkSize);

        var model = new byte[DiskSectors * Sector];
        var known = new bool[DiskSectors]; // false once discarded: 5.2.6.1 says nothing about what reads return
        Array.Fill(known, true);

        var i = 0;
        while (i < w.Ops.Length)
        {
            // A batch: up to Depth operations in flight at once, none writing what another touches.
            var batch = new List<Op>();
            while (i < w.Ops.Length && batch.Count < w.Depth && !batch.Any(b => Conflict(b, w.Ops[i])))
                batch.Add(w.Ops[i++]);

            var reads = new Dictionary<Op, byte[]>();
            var tasks = new List<Task>();
            foreach (var op in batch)
            {
                var offset = (ulong)op.Sector * Sector;
                var length = op.Sectors * Sector;
                switch (op.Kind)
                {
                    case Kind.Read:
                        var into = new byte[length];
                        reads[op] = into;
                        tasks.Add(driver.ReadAsync(offset, into).AsTask());
                        break;
                    case Kind.Write:
                        tasks.Add(driver.WriteAsync(offset, Data(op)).AsTask());
                        break;
                    case Kind.Flush:
                        tasks.Add(driver.FlushAsync().AsTask());
                        break;
                    case Kind.Discard:
                        tasks.Add(driver.DiscardAsync(offset, (ulong)length).AsTask());
                        break;
                    case Kind.WriteZeroes:
                        tasks.Add(driver.WriteZeroesAsync(offset, (ulong)length, mayUnmap: op.Seed % 2 == 0).AsTask());
                        break;
                }
            }
            await Task.WhenAll(tasks);

            foreach (var (op, bytes) in reads)
                AssertMatches(model, known, op.Sector, bytes, $"read {op}");
            foreach (var op in batch)
            {
                var range = model.AsSpan(op.Sector * Sector, op.Sectors * Sector);
                switch (op.Kind)
                {
                    case Kind.Write:
                        Data(op).CopyTo(range);
                        known.AsSpan(op.Sector, op.Sectors).Fill(true);
                        break;
                    case Kind.WriteZeroes:
                        range.Clear(); // 5.2.6.2: reads of the range MUST return zeroes afterwards
                        known.AsSpan(op.Sector, op.Sectors).Fill(true);
                        break;
                    case Kind.Discard:
                        known.AsSpan(op.Sector, op.Sectors).Fill(false);
                        break;
                }
            }
        }

        // Every byte: what is on the disk, and what a full read through the driver returns.
        AssertMatches(model, known, 0, backend.Contents(0, model.Length).ToArray(), "disk contents");
        var all = new byte[model.Length];
        await driver.ReadAsync(0, all);
        AssertMatches(model, known, 0, all, "final read");
        rig.AssertHealthy();
        return true;
    }

    private static void AssertMatches(byte[] model, bool[] known, int firstSector, byte[] actual, string what)
    {
        for (var s = 0; s < actual.Length / Sector; s++)
        {
            if (!known[firstSector + s])
                continue;
            var expected = model.AsSpan((firstSector + s) * Sector, Sector);
            var got = actual.AsSpan(s * Sector, Sector);
            if (!got.SequenceEqual(expected))
                Assert.Fail($"{what}: sector {firstSector + s} differs from the model");
        }
    }
}
