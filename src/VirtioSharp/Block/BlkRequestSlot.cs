using System.Threading.Tasks.Sources;

namespace VirtioSharp.Block;

/// <summary>
/// One request's reusable state: its header, status byte, indirect table and bounce buffer in
/// guest memory, and an allocation-free awaitable. A slot returns to its pool when the
/// awaiter takes the result, so its buffers are never reused before the caller is done.
/// </summary>
internal sealed class BlkRequestSlot : IValueTaskSource<BlkStatus>
{
    private ManualResetValueTaskSourceCore<BlkStatus> _core = new() { RunContinuationsAsynchronously = true };

    public BlkRequestSlot(BlkQueueContext owner, ulong header, ulong status, ulong indirect, ulong bounce, uint bounceSize, bool inline = false)
    {
        _core.RunContinuationsAsynchronously = !inline;
        Owner = owner;
        HeaderAddress = header;
        StatusAddress = status;
        IndirectAddress = indirect;
        BounceAddress = bounce;
        BounceSize = bounceSize;
    }

    public BlkQueueContext Owner { get; }
    public ulong HeaderAddress { get; }
    public ulong StatusAddress { get; }
    public ulong IndirectAddress { get; }
    public ulong BounceAddress { get; }
    public uint BounceSize { get; }

    // Per request:
    public ushort Head;
    /// <summary>The request as first placed, so it can be made available again on a restarted ring.</summary>
    public uint Type;
    public ulong Sector;
    public Queues.DriverBuffer Data; // Length 0: no data buffer
    /// <summary>Order of first submission on its queue; a restarted ring gets the requests back in this order.</summary>
    public long Sequence;
    public uint WritableBytes;
    public uint UsedLength;
    public Memory<byte> CopyBack;
    public bool Tracing;

    public short Version => _core.Version;

    public ValueTask<BlkStatus> AsValueTask() => new(this, _core.Version);

    public void Complete(BlkStatus status) => _core.SetResult(status);

    public void Fail(Exception error) => _core.SetException(error);

    public BlkStatus GetResult(short token)
    {
        try
        {
            var status = _core.GetResult(token);
            if (status == BlkStatus.Ok && !CopyBack.IsEmpty)
                Owner.Memory.GetSpan(BounceAddress, CopyBack.Length).CopyTo(CopyBack.Span);
            return status;
        }
        finally
        {
            CopyBack = default;
            _core.Reset();
            Owner.Return(this);
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
