using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// The buffers of one chain as a queue recorder saw them, and copies of their bytes for display
/// (a request's header, first data bytes, status byte). Guest memory is read once per copy and
/// only shown; nothing the queue decides depends on it.
/// </summary>
internal static unsafe class RecordedChain
{
    /// <summary>Buffers kept per chain at most (a longer chain shows its first ones).</summary>
    public const int MaxBuffers = 64;

    /// <summary>Copies up to <paramref name="max"/> bytes of the chain's readable or writable buffers.</summary>
    public static byte[] Copy(GuestMemory memory, List<(ulong Addr, uint Len, bool Writable)> chain, bool writable, int max)
    {
        if (max <= 0)
            return [];
        var result = new List<byte>(max);
        foreach (var (addr, len, w) in chain)
        {
            if (w != writable || result.Count >= max)
                continue;
            var take = (int)Math.Min(len, (uint)(max - result.Count));
            if (take > 0 && memory.TryTranslate(addr, (ulong)take, out var host))
                result.AddRange(new ReadOnlySpan<byte>((void*)host, take));
        }
        return result.ToArray();
    }

    /// <summary>The last byte of the chain's last buffer when that buffer is device-writable (virtio-blk's status byte).</summary>
    public static bool TryStatus(GuestMemory memory, List<(ulong Addr, uint Len, bool Writable)> chain, out ulong address, out byte status)
    {
        address = 0;
        status = 0;
        var last = chain.Count > 0 ? chain[^1] : default;
        if (!last.Writable || last.Len == 0 || !memory.TryTranslate(last.Addr + last.Len - 1, 1, out var host))
            return false;
        address = last.Addr + last.Len - 1;
        status = *(byte*)host;
        return true;
    }
}
