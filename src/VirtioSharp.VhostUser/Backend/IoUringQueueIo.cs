using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// <see cref="IQueueIo"/> on a queue worker's io_uring. Completions are tagged with the chain
/// head in the low 16 bits of user_data; the worker's own polls use tags above that range.
/// Operations other threads complete arrive on <paramref name="port"/>, whose eventfd the
/// worker polls on the same ring. Descriptors a backend asks the worker to watch
/// (<see cref="TryWatch"/>) get a multishot poll each; their completions carry
/// <see cref="WatchTag"/>, the slot and a generation, so a completion of a released watch is
/// told apart from one of the watch that took its slot since.
/// </summary>
internal sealed unsafe class IoUringQueueIo(IoUring ring, CompletionPort port) : IQueueIo
{
    public const ulong KickTag = 1UL << 62;
    public const ulong ControlTag = 2UL << 62;
    public const ulong CompletionTag = 3UL << 62;

    public CompletionPort Completions => port;

    /// <summary>The worker's ring the operations go on.</summary>
    public IoUring Ring => ring;
    public const ulong TimerTag = 1UL << 61;
    /// <summary>The <see cref="CallWatchdog"/>'s timeout (timespec slot 1; the limits' timer has slot 0).</summary>
    public const ulong WatchdogTag = TimerTag + 1;
    /// <summary>The call eventfd's write the worker queues before it waits; it completes only when it fails.</summary>
    public const ulong CallTag = TimerTag + 2;

    /// <summary>A watch's poll: slot in bits 0-7, generation in bits 8-39.</summary>
    public const ulong WatchTag = 1UL << 60;
    /// <summary>The removal of a released watch's poll (its completion means nothing).</summary>
    public const ulong WatchRemoveTag = 1UL << 59;
    private const int Watches = 4;
    private const uint WatchEvents = 0x0001 | 0x2000; // POLLIN | POLLRDHUP: a peer's half-close shows too
    private const int MaxWatchFailures = 8;
    private readonly IReadableWatcher?[] _watchers = new IReadableWatcher?[Watches];
    private readonly int[] _watchFd = new int[Watches];
    private readonly uint[] _watchGeneration = new uint[Watches];
    private readonly bool[] _watchArm = new bool[Watches];
    private readonly int[] _watchFailures = new int[Watches];
    private int _watchCount;

    public static bool IsIo(ulong userData) => userData <= ushort.MaxValue;

    public static bool IsWatch(ulong userData) => userData >> 59 == 2;

    public static bool IsWatchRemove(ulong userData) => userData >> 59 == 1;

    /// <summary>Whether anything is watched (then a wake-up of the completion port also looks at the watches).</summary>
    public bool Watching => _watchCount > 0;

    private ulong WatchUserData(int slot) => WatchTag | ((ulong)_watchGeneration[slot] << 8) | (uint)slot;

    public bool TryWatch(int fd, IReadableWatcher watcher)
    {
        for (var slot = 0; slot < Watches; slot++)
        {
            if (_watchers[slot] != null)
                continue;
            _watchGeneration[slot]++;
            var userData = WatchUserData(slot);
            if (!ring.QueuePollMultishot(fd, userData, WatchEvents) && !(SubmitQueued() && ring.QueuePollMultishot(fd, userData, WatchEvents)))
                return false;
            _watchers[slot] = watcher;
            _watchFd[slot] = fd;
            _watchArm[slot] = false;
            _watchFailures[slot] = 0;
            _watchCount++;
            return true;
        }
        return false;
    }

    /// <summary>Arms again the watches whose multishot poll the kernel ended (worker, before it sleeps).</summary>
    public void ArmWatches()
    {
        if (_watchCount == 0)
            return;
        for (var slot = 0; slot < Watches; slot++)
        {
            if (_watchers[slot] != null && _watchArm[slot])
                _watchArm[slot] = !ring.QueuePollMultishot(_watchFd[slot], WatchUserData(slot), WatchEvents);
        }
    }

    /// <summary>
    /// A watch's poll completed: its watcher is served (unless the completion is of a watch
    /// released since). The caller then takes the completions posted to the port.
    /// </summary>
    public void OnWatch(in IoUring.Cqe cqe)
    {
        var slot = (int)(cqe.UserData & 0xff);
        if (slot >= Watches || _watchers[slot] is not { } watcher || _watchGeneration[slot] != (uint)(cqe.UserData >> 8))
            return;
        var more = (cqe.Flags & IoUring.CqeFlagMore) != 0;
        if (!more)
            _watchArm[slot] = true;
        // A poll the kernel ends at once, each time it is armed, would spin the worker: give the watch up.
        var failing = cqe.Result < 0 && !more && ++_watchFailures[slot] >= MaxWatchFailures;
        if (cqe.Result >= 0)
            _watchFailures[slot] = 0;
        if (!watcher.Readable(cqe.Result >= 0 ? cqe.Result : -1) || failing)
            Release(slot);
    }

    /// <summary>Serves every watcher once (after a wake-up that may stand for a hand-over of a descriptor).</summary>
    public void ServeWatches()
    {
        for (var slot = 0; slot < Watches && _watchCount > 0; slot++)
        {
            if (_watchers[slot] is { } watcher && !watcher.Readable(-1))
                Release(slot);
        }
    }

    /// <summary>Ends every watch (the worker stops): each watcher is told, on this thread.</summary>
    public void ReleaseWatches()
    {
        for (var slot = 0; slot < Watches && _watchCount > 0; slot++)
        {
            if (_watchers[slot] != null)
                Release(slot);
        }
    }

    private void Release(int slot)
    {
        var watcher = _watchers[slot]!;
        if (!_watchArm[slot])
            ring.QueuePollRemove(WatchUserData(slot), WatchRemoveTag); // a full queue leaves it armed: its completions are told apart by the generation
        _watchers[slot] = null;
        _watchCount--;
        watcher.Released();
    }

    public bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag) =>
        ring.QueueReadV(fd, iov, count, offset, tag) || (SubmitQueued() && ring.QueueReadV(fd, iov, count, offset, tag));

    public bool TryStartWrite(int fd, IoVec* iov, int count, ulong offset, ushort tag) =>
        ring.QueueWriteV(fd, iov, count, offset, tag) || (SubmitQueued() && ring.QueueWriteV(fd, iov, count, offset, tag));

    public bool TryStartFlush(int fd, ushort tag) =>
        ring.QueueFDataSync(fd, tag) || (SubmitQueued() && ring.QueueFDataSync(fd, tag));

    /// <summary>The submission queue is full: hand it to the kernel (which frees it) and try once more.</summary>
    private bool SubmitQueued()
    {
        ring.SubmitAndWait(wait: false);
        return true;
    }
}
