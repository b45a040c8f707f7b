using System.Runtime.CompilerServices;

namespace VirtioSharp.Queues;

/// <summary>
/// The first descriptor of a packed-ring batch whose flags one half holds back (2.8.9, 2.8.21.1):
/// the other half polls only its next slot (2.8.2), so writing these flags last, with release,
/// hands it the whole batch at once. One per queue half; owned by that half's thread.
/// </summary>
internal unsafe struct PackedBatchHead
{
    private byte* _descriptor; // null: nothing held
    private ushort _flags;

    public readonly bool IsHeld => _descriptor != null;

    public readonly bool Is(byte* descriptor) => _descriptor == descriptor;

    public void Hold(byte* descriptor, ushort flags)
    {
        _descriptor = descriptor;
        _flags = flags;
    }

    /// <summary>Writes the held flags (release: after everything the batch wrote) and holds nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release()
    {
        var d = _descriptor;
        if (d is null)
            return;
        _descriptor = null;
        Volatile.Write(ref *(ushort*)(d + 14), _flags);
    }

    /// <summary>Forgets the held descriptor without writing it (the ring is being reset).</summary>
    public void Drop() => _descriptor = null;
}
