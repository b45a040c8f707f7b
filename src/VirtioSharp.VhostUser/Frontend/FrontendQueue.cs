using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>
/// One virtqueue as the front-end transport sees it: the kick and call eventfds, the thread that
/// turns calls into <see cref="IInterruptHandler.OnUsedBuffers"/>, and read-only views of the
/// two ring indices (for draining and for the progress check).
/// </summary>
internal sealed unsafe class FrontendQueue : IDisposable
{
    private readonly ushort* _availIdx;
    private readonly ushort* _usedIdx;
    private readonly Func<IInterruptHandler?> _handler;
    private readonly ILogSink? _log;
    private Thread? _thread;
    private volatile bool _stopping;

    /// <param name="descriptorTable">Ring addresses as this process sees them (vhost-user's user addresses).</param>
    public FrontendQueue(int index, int size, ulong descriptorTable, ulong availRing, ulong usedRing, Func<IInterruptHandler?> handler, int pollMicroseconds = 0, bool packed = false, int cpu = -1, ILogSink? log = null)
    {
        Cpu = cpu;
        _log = log;
        Packed = packed;
        // A packed ring keeps no indices in memory (2.8): neither the progress check nor the poller watches it.
        Poller = new AdaptivePoller(packed ? 0 : pollMicroseconds);
        Index = index;
        Size = size;
        DescriptorUser = descriptorTable;
        AvailUser = availRing;
        UsedUser = usedRing;
        // 2.7.6 / 2.7.8: flags, then idx.
        _availIdx = packed ? null : (ushort*)((nint)availRing + 2);
        _usedIdx = packed ? null : (ushort*)((nint)usedRing + 2);
        _handler = handler;
        Kick = EventFd.Create();
        Call = EventFd.Create();
    }

    public int Index { get; }
    /// <summary>The CPU the call thread pins itself to; -1: not pinned.</summary>
    public int Cpu { get; }
    public int Size { get; }
    /// <summary>Where the ring lies, for SET_VRING_ADDR (sent again to a back-end reached anew).</summary>
    public ulong DescriptorUser { get; }
    public ulong AvailUser { get; }
    public ulong UsedUser { get; }
    public EventFd Kick { get; }
    public EventFd Call { get; }
    public bool Enabled { get; set; }

    /// <summary>How long the call thread watches the used ring after handling completions before it sleeps on the call eventfd.</summary>
    public AdaptivePoller Poller { get; }

    /// <summary>Requests made available and not yet used, as the rings show them.</summary>
    public int InFlight => _availIdx == null ? 0 : (ushort)(Volatile.Read(ref *_availIdx) - Volatile.Read(ref *_usedIdx));
    public ushort UsedIndex => _usedIdx == null ? (ushort)0 : Volatile.Read(ref *_usedIdx);
    /// <summary>The ring is in the packed format (2.8).</summary>
    public bool Packed { get; }

    // Progress check state, touched only by the monitor thread.
    public ushort LastSeenUsed;
    public long LastProgress;

    /// <summary>Starts the thread that waits on the call eventfd.</summary>
    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = $"vhost-user-call-{Index}" };
        _thread.Start();
    }

    private void Run()
    {
        if (Cpu >= 0 && !ThreadAffinity.TryPinCurrentThread(Cpu, out var pinError))
            _log?.Warn($"vhost-user: queue {Index}: call thread not pinned: {pinError}");
        var seen = UsedIndex;
        IInterruptHandler? polled = null; // the handler told that this thread polls (no interrupts meanwhile)
        while (true)
        {
            if (Poller.Enabled)
            {
                if (polled is null && _handler() is { } h)
                {
                    h.SetPolling(Index, true);
                    polled = h;
                }
                if (WatchUsed(seen))
                {
                    // The back-end used more buffers while we looked: no sleep, no eventfd read.
                    seen = UsedIndex;
                    _handler()?.OnUsedBuffers(Index);
                    continue;
                }
                if (_stopping)
                    return; // perhaps stopped from this thread (an inline completion): the ring may be gone
                // Interrupts on again before sleeping; what was used meanwhile is reaped first.
                var arrived = polled?.SetPolling(Index, false) == true;
                polled = null;
                if (arrived)
                {
                    seen = UsedIndex;
                    _handler()?.OnUsedBuffers(Index);
                    continue;
                }
            }
            // Poll, then read: the descriptor is shared with the back-end, which may make it non-blocking.
            Poller.Sleeping();
            Call.Wait(-1); // until the back-end (or Stop) writes the eventfd
            Poller.Woke();
            Call.TryRead(out _);
            if (_stopping)
                return;
            seen = UsedIndex;
            _handler()?.OnUsedBuffers(Index);
        }
    }

    /// <summary>Watches the used index for up to the poller's window; true when it moved past <paramref name="seen"/>.</summary>
    private bool WatchUsed(ushort seen)
    {
        var until = Poller.Begin();
        while (!_stopping && System.Diagnostics.Stopwatch.GetTimestamp() < until)
        {
            if (UsedIndex != seen)
            {
                Poller.Hit();
                return true;
            }
            Thread.SpinWait(4);
        }
        return false;
    }

    /// <summary>Stops the call thread: wakes it through its own eventfd and waits for it.</summary>
    public void Stop()
    {
        if (_thread is null)
            return;
        _stopping = true;
        Call.Signal();
        if (_thread != Thread.CurrentThread)
            _thread.Join();
        _thread = null;
    }

    public void Dispose()
    {
        Stop();
        Kick.Dispose();
        Call.Dispose();
    }
}
