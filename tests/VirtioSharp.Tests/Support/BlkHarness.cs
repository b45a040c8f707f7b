using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Support;

/// <summary>What the device left in the used ring for one chain, and the status byte it wrote.</summary>
public readonly record struct Completion(ushort Head, uint UsedId, uint UsedLength, byte Status);

/// <summary>
/// A <see cref="BlkDevice"/> driven directly (no MMIO, no threads): tests lay chains out by
/// hand in a <see cref="RingBuilder"/>, call <see cref="BlkDevice.ProcessQueue"/>, and read the
/// used ring and the status byte.
/// </summary>
public sealed class BlkHarness : IDisposable
{
    public const byte Untouched = 0xee;

    public BlkHarness(IBlockBackend backend, BlkDeviceOptions? options = null, ulong? negotiate = null, int queueSize = 64)
    {
        Backend = backend;
        Log = new ListLogSink();
        Device = new BlkDevice(backend, (options ?? new BlkDeviceOptions()) with { QueueSize = queueSize, Log = Log });
        Negotiated = negotiate ?? Device.DeviceFeatures;
        Device.Activate(Negotiated);
        Ring = new RingBuilder(queueSize, 4 << 20);
        Queue = Ring.Device(
            eventIdx: VirtioFeatures.Has(Negotiated, VirtioFeatures.RingEventIdx),
            indirect: VirtioFeatures.Has(Negotiated, VirtioFeatures.RingIndirectDesc));
    }

    public IBlockBackend Backend { get; }
    public BlkDevice Device { get; }
    public RingBuilder Ring { get; }
    public SplitDeviceQueue Queue { get; }
    public ListLogSink Log { get; }
    public ulong Negotiated { get; }

    /// <summary>A 16-byte request header (5.2.6) in its own device-readable buffer.</summary>
    public ulong Header(uint type, ulong sector = 0)
    {
        var a = Ring.Alloc(16);
        new BlkRequestHeader(type, 0, sector).Write(Ring.Span(a, 16));
        return a;
    }

    public ulong Header(BlkRequestType type, ulong sector = 0) => Header((uint)type, sector);

    /// <summary>A one-byte status buffer, pre-filled with <see cref="Untouched"/>.</summary>
    public ulong StatusByte()
    {
        var a = Ring.Alloc(1, 1);
        Ring.Span(a, 1)[0] = Untouched;
        return a;
    }

    public ulong Data(int length, byte fill = 0)
    {
        var a = Ring.Alloc(length, 16);
        Ring.Span(a, length).Fill(fill);
        return a;
    }

    /// <summary>DISCARD / WRITE_ZEROES segments (5.2.6) in one device-readable buffer.</summary>
    public ulong Segments(params BlkDiscardSegment[] segments)
    {
        var a = Ring.Alloc(Math.Max(16, segments.Length * 16));
        for (var i = 0; i < segments.Length; i++)
            segments[i].Write(Ring.Span(a + (ulong)i * 16, 16));
        return a;
    }

    /// <summary>Offers one chain, lets the device drain the queue, and returns what it put in the used ring.</summary>
    public Completion Run(params Buf[] buffers) => RunHead(Ring.Chain(buffers), StatusAddressOf(buffers));

    /// <summary>Offers an already written head and drains; <paramref name="statusAddress"/> is where a status byte would be.</summary>
    public Completion RunHead(ushort head, ulong statusAddress)
    {
        var before = Ring.UsedIdx;
        Ring.Offer(head);
        Device.ProcessQueue(Queue);
        var after = Ring.UsedIdx;
        if ((ushort)(after - before) != 1)
            throw new InvalidOperationException($"expected exactly one used element, used idx went {before} -> {after}");
        var (id, len) = Ring.UsedElement(before);
        var status = statusAddress != 0 && Ring.Memory.TryTranslate(statusAddress, 1, out _) ? Ring.Span(statusAddress, 1)[0] : Untouched;
        return new Completion(head, id, len, status);
    }

    private static ulong StatusAddressOf(Buf[] buffers) =>
        buffers.Length == 0 || buffers[^1].Length == 0 ? 0 : buffers[^1].Address + buffers[^1].Length - 1;

    public ulong ReadU64(ulong address) => BinaryPrimitives.ReadUInt64LittleEndian(Ring.Span(address, 8));

    public void Dispose()
    {
        Ring.Dispose();
        Backend.Dispose();
    }
}
