using System.Runtime.CompilerServices;

namespace VirtioSharp.Queues;

/// <summary>
/// 64 bytes of nothing: the last field of a queue half, so that the fields its thread writes
/// and the next object in memory (maybe the other half, polled from another core) never share a
/// cache line. The runtime lays value-type fields out after the primitive ones.
/// </summary>
[InlineArray(8)]
internal struct CacheLinePad
{
    private long _element;
}

/// <summary>
/// Arrays a queue half writes per request, each followed by one cache line of elements nobody
/// uses, as the halves end with <see cref="CacheLinePad"/>: the runtime places the next object
/// right after an array, and a half's writes near the end of one (the top of a free-id stack, the
/// bookkeeping of a high id) must not land on the line the other half reads that object's fields
/// from. Callers index below the length they asked for; the array's own length is larger.
/// </summary>
internal static class PaddedArray
{
    private const int CacheLine = 64;

    public static unsafe T[] Of<T>(int length) where T : unmanaged => new T[length + (CacheLine + sizeof(T) - 1) / sizeof(T)];
}
