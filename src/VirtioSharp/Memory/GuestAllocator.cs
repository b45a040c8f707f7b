namespace VirtioSharp.Memory;

/// <summary>
/// A bump allocator over a range of guest-physical memory, used by drivers to place rings,
/// request headers and data buffers. Thread-safe; memory is handed out for the driver's lifetime.
/// </summary>
public sealed class GuestAllocator
{
    private readonly Lock _lock = new();
    private readonly ulong _end;
    private ulong _next;

    public GuestAllocator(GuestMemory memory, ulong start, ulong length)
    {
        if (!memory.TryTranslate(start, length, out _))
            throw new ArgumentException("allocator range is not inside one guest memory region");
        Memory = memory;
        _next = start;
        _end = start + length;
    }

    public GuestMemory Memory { get; }

    public ulong Remaining { get { lock (_lock) return _end - _next; } }

    public ulong Allocate(ulong length, ulong alignment = 16)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(alignment));
        lock (_lock)
        {
            var start = (_next + alignment - 1) & ~(alignment - 1);
            if (start < _next || start > _end || length > _end - start)
                throw new InsufficientMemoryException($"guest memory exhausted: wanted {length} bytes, {_end - _next} left");
            _next = start + length;
            GetSpanUnchecked(start, length).Clear();
            return start;
        }
    }

    private Span<byte> GetSpanUnchecked(ulong start, ulong length)
    {
        // Allocations can exceed int.MaxValue only in theory; clear in slices.
        if (length > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length));
        return Memory.GetSpan(start, (int)length);
    }
}
