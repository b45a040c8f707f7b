using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// The shared area of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (vhost-user.rst, "Inflight I/O
/// tracking"): one region per queue, back to back, each a <see cref="SplitInflightRecord"/> or,
/// when the rings are packed, a <see cref="PackedInflightRecord"/> (the format comes from the
/// features negotiated before the area is made or handed over: QEMU sends SET_FEATURES first).
/// The back-end makes it (GET_INFLIGHT_FD, a sealed memfd), the front-end keeps it across our
/// restarts and hands it to the next back-end (SET_INFLIGHT_FD). The front-end can write it too,
/// so nothing read from it is trusted before the record's checks.
/// </summary>
internal sealed class InflightRegion : IDisposable
{
    /// <summary>Each queue's region is rounded up to this many bytes, as libvhost-user lays it out.</summary>
    public const int QueueRegionAlignment = 64;

    private readonly SafeFdHandle _fd;
    private readonly Mapping _mapping;
    private readonly bool[] _rejected;

    private InflightRegion(SafeFdHandle fd, Mapping mapping, ulong size, ulong offset, ushort numQueues, ushort queueSize, bool packed)
    {
        Packed = packed;
        _fd = fd;
        _mapping = mapping;
        Size = size;
        Offset = offset;
        NumQueues = numQueues;
        QueueSize = queueSize;
        _rejected = new bool[numQueues];
    }

    public ulong Size { get; }
    public ulong Offset { get; }
    public ushort NumQueues { get; }
    public ushort QueueSize { get; }
    /// <summary>Laid out for packed rings (QueueRegionPacked) rather than split ones.</summary>
    public bool Packed { get; }
    public SafeFdHandle Fd => _fd;
    public InflightDescription Description => new(Size, Offset, NumQueues, QueueSize);

    /// <summary>
    /// Bytes of one queue's region, rounded up to 64: a split ring's 16-byte header and 16-byte
    /// entries, or a packed ring's 32-byte header and 32-byte entries, queue-size entries either way.
    /// </summary>
    public static ulong QueueRegionSize(ushort queueSize, bool packed = false)
    {
        var (header, entry) = packed
            ? (PackedInflightRecord.HeaderSize, PackedInflightRecord.EntrySize)
            : (SplitInflightRecord.HeaderSize, SplitInflightRecord.EntrySize);
        return ((ulong)header + (ulong)entry * queueSize + QueueRegionAlignment - 1) & ~(ulong)(QueueRegionAlignment - 1);
    }

    /// <summary>Checks the numbers of a GET or SET; null when they are usable.</summary>
    public static string? CheckShape(ushort numQueues, ushort queueSize, int deviceQueues, bool packed = false)
    {
        if (numQueues == 0 || numQueues > deviceQueues)
            return $"{numQueues} queues; the device has {deviceQueues}";
        // 2.7: a split ring's size is a power of two; 2.8.10.1: a packed ring's need not be.
        if (packed ? !PackedRing.IsValidSize(queueSize) : !SplitRing.IsValidSize(queueSize))
            return packed ? $"queue size {queueSize} is not in 1..{PackedRing.MaxQueueSize}" : $"queue size {queueSize} is not a power of two in 1..{SplitRing.MaxQueueSize}";
        return null;
    }

    /// <summary>A new, zeroed area for <paramref name="numQueues"/> queues of <paramref name="queueSize"/> (GET_INFLIGHT_FD).</summary>
    public static InflightRegion Create(ushort numQueues, ushort queueSize, bool packed = false)
    {
        var size = QueueRegionSize(queueSize, packed) * numQueues;
        var fd = MemFd.Create("vhost-user-inflight", size, sealSize: true);
        try
        {
            return new InflightRegion(fd, Mapping.Map(fd, 0, size), size, 0, numQueues, queueSize, packed);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Maps an area a front-end handed over (SET_INFLIGHT_FD); null with the reason when it cannot hold what it claims.</summary>
    public static InflightRegion? Adopt(SafeFdHandle fd, InflightDescription d, int deviceQueues, out string? error, bool packed = false)
    {
        error = CheckShape(d.NumQueues, d.QueueSize, deviceQueues, packed);
        if (error != null)
            return null;
        var needed = QueueRegionSize(d.QueueSize, packed) * d.NumQueues;
        if (d.MmapSize < needed)
        {
            error = $"the area is {d.MmapSize} bytes; {d.NumQueues} {(packed ? "packed" : "split")} queues of {d.QueueSize} need {needed}";
            return null;
        }
        if (d.MmapOffset > long.MaxValue - d.MmapSize)
        {
            error = $"offset {d.MmapOffset} + size {d.MmapSize} overflows";
            return null;
        }
        var kind = FileStatus.KindOf(fd, out var fileSize);
        if (kind != FileKind.Regular)
        {
            error = $"the descriptor is a {kind}, not a memory file";
            return null;
        }
        if (fileSize < d.MmapOffset + d.MmapSize)
        {
            error = $"its file holds {fileSize} bytes, less than offset {d.MmapOffset} + size {d.MmapSize}";
            return null;
        }
        if (!MemFd.IsSizeSealed(fd))
        {
            // Truncated under us, every access past the new end would be a SIGBUS.
            error = "its file is not sealed against shrinking (F_SEAL_SHRINK)";
            return null;
        }
        return new InflightRegion(fd, Mapping.Map(fd, d.MmapOffset, d.MmapSize), d.MmapSize, d.MmapOffset, d.NumQueues, d.QueueSize, packed);
    }

    private bool Has(int index) => (uint)index < NumQueues && !_rejected[index];
    private nint QueueAddress(int index) => _mapping.Address + (nint)(QueueRegionSize(QueueSize, Packed) * (ulong)index);

    /// <summary>The split record of queue <paramref name="index"/>; null when the area is packed, has none for it, or it was rejected.</summary>
    public SplitInflightRecord? Queue(int index) =>
        !Packed && Has(index) ? new SplitInflightRecord(QueueAddress(index), QueueSize) : null;

    /// <summary>The packed record of queue <paramref name="index"/> (a new view with its own private state); null as for <see cref="Queue"/>.</summary>
    public PackedInflightRecord? PackedQueue(int index) =>
        Packed && Has(index) ? new PackedInflightRecord(QueueAddress(index), QueueSize) : null;

    /// <summary>Stops using queue <paramref name="index"/>'s record for the rest of this area's life.</summary>
    public void Reject(int index)
    {
        if ((uint)index < NumQueues)
            _rejected[index] = true;
    }

    public void Dispose()
    {
        _mapping.Dispose();
        _fd.Dispose();
    }
}
