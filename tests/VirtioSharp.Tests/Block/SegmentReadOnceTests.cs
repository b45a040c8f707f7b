using VirtioSharp.Block;
using VirtioSharp.Memory;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// DESIGN: every guest-controlled value is read once, checked, then used. DISCARD / WRITE_ZEROES
/// segments (5.2.6) are copied out of guest memory once; a driver that rewrites a segment while the
/// request runs changes nothing about what the device does.
/// </summary>
public sealed class SegmentReadOnceTests
{
    /// <summary>A memory disk that calls back on its first discard, while the request is running.</summary>
    private sealed class RewritingBackend(ulong capacity) : IBlockBackend
    {
        private readonly MemoryBackend _inner = new(capacity);
        public Action? OnFirstDiscard { get; set; }
        public List<(ulong Offset, ulong Length)> Discards { get; } = [];
        public ulong Capacity => _inner.Capacity;
        public uint BlockSize => _inner.BlockSize;
        public bool ReadOnly => false;
        public bool SupportsDiscard => true;
        public bool SupportsWriteZeroes => true;
        public string Description => "rewriting test disk";
        public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => _inner.Read(offset, iov);
        public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => _inner.Write(offset, iov);
        public bool Flush() => true;
        public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => _inner.WriteZeroes(offset, length, mayUnmap);

        public bool Discard(ulong offset, ulong length)
        {
            Discards.Add((offset, length));
            var callback = OnFirstDiscard;
            OnFirstDiscard = null;
            callback?.Invoke();
            return true;
        }

        public void Dispose() => _inner.Dispose();
    }

    [Fact]
    public void A_segment_rewritten_by_the_driver_mid_request_is_executed_as_it_was_checked_5_2_6()
    {
        using var backend = new RewritingBackend(1 << 20);
        using var h = new BlkHarness(backend);
        var segments = h.Segments(new BlkDiscardSegment(8, 8, 0), new BlkDiscardSegment(64, 8, 0));
        // While segment 0 runs, the driver points segment 1 far past the end of the disk.
        backend.OnFirstDiscard = () => new BlkDiscardSegment(ulong.MaxValue - 4, 8, 0).Write(h.Ring.Span(segments + 16, 16));

        var c = h.Run(Buf.R(h.Header(BlkRequestType.Discard), 16), Buf.R(segments, 32), Buf.W(h.StatusByte(), 1));

        Assert.Equal((byte)BlkStatus.Ok, c.Status);
        Assert.Equal([(8UL * 512, 8UL * 512), (64UL * 512, 8UL * 512)], backend.Discards);
    }
}
