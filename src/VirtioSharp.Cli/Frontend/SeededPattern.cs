using System.Buffers.Binary;

namespace VirtioSharp.Cli.Frontend;

/// <summary>
/// A reproducible data pattern: every 8-byte word depends only on the seed and its absolute disk
/// offset, so any chunking of a range yields the same bytes and a mismatch names its offset.
/// </summary>
internal static class SeededPattern
{
    public static void Fill(Span<byte> destination, ulong diskOffset, ulong seed)
    {
        Span<byte> tail = stackalloc byte[8];
        for (var i = 0; i < destination.Length; i += 8)
        {
            var word = Mix(seed ^ ((diskOffset + (ulong)i) >> 3) * 0x9E3779B97F4A7C15UL);
            if (destination.Length - i >= 8)
                BinaryPrimitives.WriteUInt64LittleEndian(destination[i..], word);
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(tail, word);
                tail[..(destination.Length - i)].CopyTo(destination[i..]);
            }
        }
    }

    /// <summary>splitmix64's finaliser: a cheap bijective mixer.</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
