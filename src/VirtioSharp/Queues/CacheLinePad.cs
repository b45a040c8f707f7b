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
