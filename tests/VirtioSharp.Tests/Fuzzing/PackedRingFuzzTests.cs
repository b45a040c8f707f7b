using System.Buffers.Binary;
using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using Xunit.Abstractions;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>
/// The ring fuzzer's packed mode (2.8): <see cref="BlkDevice"/> drains packed rings that are random
/// bytes, near-valid (written by <see cref="PackedDriverQueue"/>: random request types, sectors,
/// lengths, indirect tables, ids, ring sizes and positions) or near-valid and then mutated (flags,
/// addresses, lengths, ids, event suppression). Guest RAM has guard pages on both sides, so any
/// access outside it crashes the run; a watchdog fails a drain that hangs. Every list the device
/// takes comes back (nothing stays in flight), and an unmutated ring gives back every id it was given.
/// </summary>
public sealed class PackedRingFuzzTests(ITestOutputHelper output)
{
    private const ulong Base = 0x1_0000_0000;
    private const ulong RamSize = 1 << 20;
    private const ulong DriverEvent = Base + 0x1000;
    private const ulong DeviceEvent = Base + 0x1004;
    private const ulong DataStart = Base + 0x2000;
    private static readonly BlkRequestType[] Types =
        [BlkRequestType.In, BlkRequestType.Out, BlkRequestType.Flush, BlkRequestType.GetId, BlkRequestType.Discard, BlkRequestType.WriteZeroes, (BlkRequestType)99];

    [Fact]
    public void Random_near_valid_and_mutated_packed_rings_never_break_the_device_2_8()
    {
        var seed = FuzzSettings.Seed ^ 0x28;
        var cases = FuzzSettings.RingCases;
        using var ram = new GuardedGuestRam(Base, RamSize);
        var memory = ram.Memory;
        using var backend = new MemoryBackend(256 << 10);
        var devices = new[]
        {
            new BlkDevice(backend, new BlkDeviceOptions { QueueSize = 64 }),
            new BlkDevice(backend, new BlkDeviceOptions { QueueSize = 64, Strict = StrictMode.Warn }),
        };
        foreach (var d in devices)
            d.Activate(d.DeviceFeatures);
        using var watchdog = new Watchdog(TimeSpan.FromSeconds(10));
        var outcomes = new Dictionary<QueueOutcome, int>();
        long listsAdded = 0, listsBack = 0, mutated = 0, randomRings = 0;
        var ids = new List<ushort>(64);
        var clock = Stopwatch.StartNew();

        for (var i = 0; i < cases; i++)
        {
            var rnd = new SplitMix(seed + (ulong)i * 0x9E3779B97F4A7C15UL);
            var device = devices[i & 1];
            var size = rnd.Chance(50) ? 1 + rnd.Below(8) : 1 + rnd.Below(64);
            var eventIdx = rnd.Chance(50);
            var mode = rnd.Below(10); // 0-1 random bytes, 2-5 near-valid, 6-9 near-valid then mutated
            memory.GetSpan(Base, 0x2000).Clear();
            PackedDriverQueue? driver = null;
            ids.Clear();
            if (mode < 2)
            {
                rnd.Fill(memory.GetSpan(Base, 0x1008)); // the ring and both event suppression structures
                randomRings++;
            }
            else
            {
                driver = new PackedDriverQueue(0, size, memory, Base, DriverEvent, DeviceEvent, eventIdx);
                // Start anywhere in the ring: run empty laps so both counters may stand at 0.
                var skip = rnd.Below(3 * size);
                for (var k = 0; k < skip; k++)
                {
                    driver.TryAdd([new DriverBuffer(DataStart, 1, true)], out var _);
                    driver.PublishForPoller();
                    Skip(memory, driver, size);
                }
                // The slots keep what the laps before left there (used descriptors of the lap before), as in a real ring.
                var lists = 1 + rnd.Below(size);
                for (var l = 0; l < lists; l++)
                {
                    if (!AddList(memory, driver, ref rnd, size, out var id))
                        break;
                    ids.Add(id);
                }
                listsAdded += ids.Count;
                driver.PublishForPoller(); // the device may see the lists only now
                if (mode >= 6)
                {
                    Mutate(memory, ref rnd, size);
                    mutated++;
                }
            }
            var availState = driver is null ? (ushort)0x8000 : PackedRing.OffWrap(driver.NextAvail, driver.AvailWrapCounter);
            if (driver is not null && ids.Count > 0)
                availState = StartOf(driver, ids, size);
            if (mode < 2 && rnd.Chance(30))
                availState = (ushort)(rnd.Below(size) | (rnd.Chance(50) ? 0x8000 : 0));
            var queue = PackedDeviceQueue.Create(0, size, memory, Base, DriverEvent, DeviceEvent, eventIdx, indirect: rnd.Chance(80), out var error,
                availState: availState) ?? throw new InvalidOperationException(error);
            queue.Breaches = device.Breaches;

            watchdog.Arm($"packed case {i} (seed 0x{seed:x}, size {size}, mode {mode})");
            var outcome = device.ProcessQueue(queue);
            watchdog.Disarm();
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            // Processed synchronously: every list taken went back with a used descriptor.
            Assert.True(queue.InFlight == 0, $"case {i}: {queue.InFlight} lists still in flight");

            if (driver is not null && mode < 6)
            {
                Assert.True(outcome != QueueOutcome.NeedsReset, $"case {i}: a well-formed packed ring was judged corrupt ({queue.LastRingError})");
                var back = 0;
                while (driver.TryTakeUsed(out var id, out _, out var usedError))
                {
                    Assert.Contains(id, ids);
                    back++;
                }
                Assert.Equal(ids.Count, back);
                listsBack += back;
            }
        }
        clock.Stop();
        var breaches = devices[0].Breaches.CountsBySection.Concat(devices[1].Breaches.CountsBySection)
            .GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.Sum(kv => kv.Value));
        output.WriteLine($"seed 0x{seed:x}: {cases} packed cases in {clock.Elapsed.TotalSeconds:0.0} s; {randomRings} random, {mutated} mutated; {listsAdded} lists written, {listsBack} checked back");
        output.WriteLine($"outcomes: {string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}"))}");
        output.WriteLine($"breaches: {string.Join(", ", breaches.OrderBy(b => b.Key).Select(b => $"{b.Key} {b.Value}"))}");

        foreach (var o in Enum.GetValues<QueueOutcome>())
            Assert.True(outcomes.GetValueOrDefault(o) > 0, $"no drain ended with {o}");
        foreach (var section in new[] { "2.8.1", "2.8.7", "2.8.17", "2.8.19", "2.8.4", "5.2.6", "5.2.6.1" })
            Assert.True(breaches.GetValueOrDefault(section) > 0, $"the fuzzer never reached a breach of {section}");
        Assert.True(listsBack > cases / 2, $"only {listsBack} lists checked back");
    }

    /// <summary>Where the first list written starts (the device's position).</summary>
    private static ushort StartOf(PackedDriverQueue driver, List<ushort> ids, int size)
    {
        // The lists written took size - FreeDescriptors slots ending at NextAvail.
        var used = size - driver.FreeDescriptors;
        var slot = driver.NextAvail - used;
        var wrap = driver.AvailWrapCounter;
        if (slot < 0)
        {
            slot += size;
            wrap = !wrap;
        }
        return PackedRing.OffWrap(slot, wrap);
    }

    /// <summary>Plays the device for one list of one slot so the driver's next list starts further on.</summary>
    private static void Skip(GuestMemory memory, PackedDriverQueue driver, int size)
    {
        var slot = driver.NextUsed;
        var d = memory.GetSpan(Base + (ulong)slot * 16, 16);
        var id = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], PackedRing.UsedFlags(driver.UsedWrapCounter));
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
        driver.TryTakeUsed(out _, out _, out _);
    }

    private static bool AddList(GuestMemory memory, PackedDriverQueue driver, ref SplitMix rnd, int size, out ushort id)
    {
        var type = rnd.Pick(Types);
        var header = DataStart + (ulong)rnd.Below(64) * 32;
        var status = DataStart + 0x800 + (ulong)rnd.Below(64) * 16;
        new BlkRequestHeader((uint)type, 0, (ulong)rnd.Below(700)).Write(memory.GetSpan(header, 16));
        Span<DriverBuffer> list = stackalloc DriverBuffer[4];
        var n = 0;
        list[n++] = new DriverBuffer(header, 16, false);
        var dataLength = (uint)(rnd.Chance(10) ? rnd.Below(4096) : 512 * (1 + rnd.Below(8)));
        var dataAt = DataStart + 0x1000 + (ulong)rnd.Below(200) * 512;
        if (rnd.Chance(3))
            dataAt = Base + RamSize - (ulong)rnd.Below(1024); // at the end of RAM, sometimes past it
        if (type is BlkRequestType.Discard or BlkRequestType.WriteZeroes)
        {
            var segs = 1 + rnd.Below(3);
            for (var s = 0; s < segs; s++)
                new BlkDiscardSegment((ulong)rnd.Below(600), (uint)(1 + rnd.Below(16)), 0).Write(memory.GetSpan(DataStart + 0x1000 + (ulong)s * 16, 16));
            list[n++] = new DriverBuffer(DataStart + 0x1000, (uint)(segs * 16), false);
        }
        else if (type != BlkRequestType.Flush || rnd.Chance(10))
            list[n++] = new DriverBuffer(dataAt, dataLength, type is BlkRequestType.In or BlkRequestType.GetId);
        list[n++] = new DriverBuffer(status, 1, true);
        if (rnd.Chance(20) && driver.FreeDescriptors > 0)
        {
            var table = DataStart + 0x8000 + (ulong)rnd.Below(16) * 64;
            PackedDriverQueue.WriteIndirectTable(memory.GetSpan(table, n * 16), list[..n]);
            return driver.TryAddIndirect(table, n, out id);
        }
        return driver.TryAdd(list[..n], out id);
    }

    private static void Mutate(GuestMemory memory, ref SplitMix rnd, int size)
    {
        var count = 1 + rnd.Below(3);
        for (var m = 0; m < count; m++)
        {
            var d = memory.GetSpan(Base + (ulong)rnd.Below(size) * 16, 16);
            switch (rnd.Below(6))
            {
                case 0: d[14] ^= (byte)(1 << rnd.Below(8)); break;                   // NEXT, WRITE, INDIRECT, AVAIL
                case 1: d[15] ^= 0x80; break;                                          // USED
                case 2: BinaryPrimitives.WriteUInt64LittleEndian(d, rnd.Next()); break; // address anywhere
                case 3: BinaryPrimitives.WriteUInt32LittleEndian(d[8..], (uint)rnd.Next()); break;
                case 4: BinaryPrimitives.WriteUInt16LittleEndian(d[12..], (ushort)rnd.Next()); break; // id
                default: BinaryPrimitives.WriteUInt32LittleEndian(memory.GetSpan(DriverEvent, 4), (uint)rnd.Next()); break;
            }
        }
    }
}
