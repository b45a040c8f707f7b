using System.Runtime.InteropServices;

namespace VirtioSharp.Devices;

/// <summary>
/// Where a storage client's threads hand finished operations back to one queue's worker.
/// <see cref="Post"/> may be called from any thread; it records (tag, result), and wakes the
/// worker when the port was empty. The worker takes everything posted with
/// <see cref="Drain"/> and finishes the requests on its own thread, so only the worker ever
/// writes a status byte or a used element. Tags are chain heads: each is in flight at most
/// once, so a fixed array per tag holds every possible completion and nothing is allocated
/// per request. Lock-free: a push-only stack of tags (compare-and-swap) that the worker
/// empties in one exchange.
/// </summary>
public sealed unsafe class CompletionPort : IDisposable
{
    private const int Empty = -1;
    private readonly int[] _next;
    private readonly int[] _result;
    private readonly int[] _posted;     // 1 from Post until Drain takes it: a second Post of the same tag is refused
    private readonly Action _wake;
    private readonly Cookie* _cookies;  // native memory: one per tag, for C callbacks (see NativeCookie)
    private GCHandle _self;
    private int _top = Empty;
    private long _stray;

    [StructLayout(LayoutKind.Sequential)]
    private struct Cookie
    {
        public nint Port;
        public int Tag;
    }

    /// <summary>A port for tags 0..<paramref name="capacity"/>-1; <paramref name="wake"/> rouses the worker (an eventfd write, an event set).</summary>
    public CompletionPort(int capacity, Action wake)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(capacity, ushort.MaxValue + 1);
        _next = new int[capacity];
        _result = new int[capacity];
        _posted = new int[capacity];
        _wake = wake;
        _self = GCHandle.Alloc(this, GCHandleType.Normal);
        _cookies = (Cookie*)NativeMemory.Alloc((nuint)capacity, (nuint)sizeof(Cookie));
        for (var i = 0; i < capacity; i++)
            _cookies[i] = new Cookie { Port = GCHandle.ToIntPtr(_self), Tag = i };
    }

    public int Capacity => _next.Length;

    /// <summary>Posts refused: a tag out of range or posted twice before the worker took it (a backend bug, never a guest's).</summary>
    public long Stray => Interlocked.Read(ref _stray);

    /// <summary>
    /// Hands back the operation <paramref name="tag"/> with <paramref name="result"/> (see
    /// <see cref="Block.IAsyncBlockBackend"/> for its meaning). Any thread; allocation-free.
    /// False (and counted in <see cref="Stray"/>) for a tag that cannot be in flight.
    /// </summary>
    public bool Post(int tag, int result)
    {
        if (!PostDeferred(tag, result, out var wake))
            return false;
        if (wake)
            _wake();
        return true;
    }

    /// <summary>
    /// <see cref="Post"/> without the wake-up, for a thread that completes several operations in a
    /// row: <paramref name="wake"/> says this post found the port empty, and then the caller must
    /// call <see cref="Wake"/> once it has posted the rest, and before it waits for anything.
    /// </summary>
    public bool PostDeferred(int tag, int result, out bool wake)
    {
        wake = false;
        if ((uint)tag >= (uint)_next.Length || Interlocked.Exchange(ref _posted[tag], 1) != 0)
        {
            Interlocked.Increment(ref _stray);
            return false;
        }
        _result[tag] = result;
        int top;
        do
        {
            top = Volatile.Read(ref _top);
            _next[tag] = top;
        }
        while (Interlocked.CompareExchange(ref _top, tag, top) != top); // full fence: result and next are visible first
        // Only the post that found the port empty wakes the worker: every later one is taken by
        // the drain that wake-up leads to, or itself finds the port emptied and wakes again.
        wake = top == Empty;
        return true;
    }

    /// <summary>Rouses the worker (after <see cref="PostDeferred"/> said so); a spare wake-up costs a drain that finds nothing.</summary>
    public void Wake() => _wake();

    /// <summary>
    /// An opaque pointer that names (this port, <paramref name="tag"/>) for a C library's callback
    /// argument; <see cref="PostCookie"/> posts through it. Valid until the port is disposed.
    /// </summary>
    public nint NativeCookie(int tag)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)tag, (uint)_next.Length, nameof(tag));
        return (nint)(_cookies + tag);
    }

    /// <summary><see cref="Post"/> for a cookie from <see cref="NativeCookie"/>; callable from a C library's thread.</summary>
    public static bool PostCookie(nint cookie, int result)
    {
        var c = (Cookie*)cookie;
        return GCHandle.FromIntPtr(c->Port).Target is CompletionPort port && port.Post(c->Tag, result);
    }

    /// <summary>
    /// The worker's side: hands every posted completion to <paramref name="complete"/>, on the
    /// calling thread. Returns how many. Only one thread may drain a port.
    /// </summary>
    public int Drain<TState>(TState state, Action<TState, ushort, int> complete)
    {
        var count = 0;
        var tag = Interlocked.Exchange(ref _top, Empty); // full fence: pairs with Post's CAS
        while (tag != Empty)
        {
            var next = _next[tag];
            var result = _result[tag];
            // Free the tag before the device finishes it: the device may start it again at once.
            Volatile.Write(ref _posted[tag], 0);
            complete(state, (ushort)tag, result);
            count++;
            tag = next;
        }
        return count;
    }

    /// <summary>Whether anything was posted and not drained yet.</summary>
    public bool HasPosted => Volatile.Read(ref _top) != Empty;

    /// <summary>Only once nothing can post any more (the worker has nothing in flight).</summary>
    public void Dispose()
    {
        if (!_self.IsAllocated)
            return;
        NativeMemory.Free(_cookies);
        _self.Free();
    }
}
