using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One virtqueue as the vhost-user front-end configured it, and the worker thread that serves it.
/// Configuration is changed by the connection's thread only; while the worker runs, the queue
/// object belongs to it. A ring is started (worker running) or stopped, and independently
/// enabled or disabled (vhost-user.rst, "Ring states"); the worker drains only when both.
/// </summary>
internal sealed class Vring : IDisposable
{
    private readonly IVirtioDevice _device;
    private readonly ILogSink? _log;
    private readonly AioMode _aio;
    private readonly EventFd _control = EventFd.Create();
    private static int s_uringFallbackLogged;
    private Thread? _worker;
    private volatile bool _stopRequested;
    private volatile bool _enabled;
    private EventFd? _call;
    private EventFd? _err;

    public Vring(int index, IVirtioDevice device, ILogSink? log, AioMode aio = AioMode.Auto)
    {
        Index = index;
        _device = device;
        _log = log;
        _aio = aio;
    }

    public int Index { get; }

    // --- configuration (connection thread) ---
    /// <summary>SET_VRING_NUM; 0 until set.</summary>
    public uint Num { get; set; }
    /// <summary>SET_VRING_ADDR; null until set.</summary>
    public VringAddress? Address { get; set; }
    /// <summary>Next available index to process: SET_VRING_BASE, and where a stopped ring left off.</summary>
    public ushort Base { get; set; }
    public EventFd? Kick { get; private set; }
    public bool Enabled => _enabled;

    // --- running state ---
    public IDeviceQueue? Queue { get; private set; }
    public bool Started => _worker != null;
    /// <summary>The worker stopped because the driver broke the ring (vhost-user has no status register to say so).</summary>
    public bool Failed { get; private set; }
    public long Kicks => Interlocked.Read(ref _kicks);
    public long Calls => Interlocked.Read(ref _calls);
    private long _kicks, _calls;

    /// <summary>Replaces the kick descriptor (the ring must be stopped).</summary>
    public void SetKick(EventFd? kick)
    {
        if (Started)
            throw new InvalidOperationException("stop the ring before replacing its kick descriptor");
        Kick?.Dispose();
        Kick = kick;
    }

    /// <summary>Replaces the call descriptor; safe while the worker runs.</summary>
    public void SetCall(EventFd? call)
    {
        Interlocked.Exchange(ref _call, call)?.Dispose();
        // A notification sent to the old descriptor may have been lost in the swap; an extra
        // one is harmless (the driver re-reads the used ring), a lost one stalls it.
        if (call != null && Started)
            call.Signal();
    }

    public void SetErr(EventFd? err) => Interlocked.Exchange(ref _err, err)?.Dispose();

    public void SetEnabled(bool enabled)
    {
        if (_enabled == enabled)
            return;
        _enabled = enabled;
        _control.Signal(); // the worker re-evaluates: starts or stops watching the kick
    }

    /// <summary>Starts the worker over <paramref name="queue"/> (built over the current memory table).</summary>
    public void Start(IDeviceQueue queue)
    {
        if (Started)
            throw new InvalidOperationException($"queue {Index} is already started");
        if (Kick is null)
            throw new InvalidOperationException($"queue {Index} has no kick descriptor");
        Queue = queue;
        Failed = false;
        _stopRequested = false;
        _control.TryRead(out _);
        _worker = new Thread(Run) { IsBackground = true, Name = $"vhost-user queue {Index}" };
        _worker.Start();
    }

    /// <summary>Stops the worker (waits for the drain in progress) and records where the ring stands.</summary>
    public void Stop()
    {
        if (_worker is null)
            return;
        _stopRequested = true;
        _control.Signal();
        _worker.Join();
        _worker = null;
        if (Queue != null)
            Base = Queue.LastAvailIndex;
        (Queue as IDisposable)?.Dispose();
        Queue = null;
    }

    /// <summary>Forgets everything the front-end set (RESET_DEVICE, disconnect).</summary>
    public void Reset()
    {
        Stop();
        SetKick(null);
        SetCall(null);
        SetErr(null);
        _enabled = false;
        Num = 0;
        Address = null;
        Base = 0;
        Failed = false;
    }

    private void Run()
    {
        var queue = Queue!;
        var kick = Kick!;
        bool kickRef = false, controlRef = false;
        IoUring? ring = null;
        try
        {
            kick.Handle.DangerousAddRef(ref kickRef);
            _control.Handle.DangerousAddRef(ref controlRef);
            // A back-end that died after moving used idx and before signalling the call left
            // used elements the driver has not been told about; with nothing new to complete,
            // nothing else would tell it. One interrupt with no work is harmless.
            SignalCall();
            if (_aio != AioMode.Sync && _device.SupportsQueueIo)
            {
                // Made on this thread: the ring is single-issuer where the kernel allows it. Its
                // completion queue (twice the submission queue) holds a full queue's completions.
                ring = IoUring.TryCreate(RingEntries(queue.Size), out var why);
                if (ring is null)
                {
                    if (_aio == AioMode.IoUring)
                        throw new InvalidOperationException($"io_uring is required (AioMode.IoUring), but {why}");
                    if (Interlocked.Exchange(ref s_uringFallbackLogged, 1) == 0)
                        _log.Info($"queue workers do file I/O synchronously: {why}");
                }
            }
            if (ring != null)
            {
                _log.Debug($"queue {Index}: reads and flushes through io_uring, up to {Math.Min(BlkDevice.MaxAsyncPerQueue, (int)queue.Size)} in flight");
                RunUring(queue, kick, ring);
            }
            else
                RunPolled(queue, kick);
        }
        catch (Exception e)
        {
            // Nothing the driver writes reaches here (the device never throws for it); this is
            // a host-side failure. Stop this queue, keep the process alive.
            Failed = true;
            _log.Error($"queue {Index}: worker stopped by an unexpected error: {e.GetType().Name}: {e.Message}");
            if (ring != null)
                FinishInFlight(queue, ring);
            _err?.Signal();
        }
        finally
        {
            ring?.Dispose(); // cancels the polls still armed; no I/O is left in flight
            if (kickRef)
                kick.Handle.DangerousRelease();
            if (controlRef)
                _control.Handle.DangerousRelease();
        }
    }

    private static uint RingEntries(ushort queueSize) =>
        (uint)Math.Min(BlkDevice.MaxAsyncPerQueue, (int)queueSize) + 2; // + the two polls

    /// <summary>Waits in poll(2) on the control and kick descriptors; the device does its I/O synchronously.</summary>
    private void RunPolled(IDeviceQueue queue, EventFd kick)
    {
        Span<PollFd> fds = stackalloc PollFd[2];
        var drain = true; // buffers may have been made available before the ring started
        while (!_stopRequested)
        {
            if (drain && _enabled && Drain(queue, null) == QueueOutcome.NeedsReset)
                return;
            drain = false;
            fds[0] = new PollFd(_control.Fd);
            fds[1] = new PollFd(_enabled ? kick.Fd : -1); // poll skips negative descriptors
            FdPoll.Wait(fds, -1);
            if (fds[0].Ready)
            {
                _control.TryRead(out _);
                drain = true;
            }
            if (fds[1].Ready)
            {
                kick.TryRead(out _);
                Interlocked.Increment(ref _kicks);
                drain = true;
            }
        }
        ReleaseHeld(queue);
    }

    /// <summary>
    /// Waits in io_uring on everything at once: multishot polls on the control and kick
    /// descriptors, and the reads and flushes the device started there. Requests complete
    /// in whatever order the kernel finishes them. The worker leaves only with nothing in
    /// flight, so guest memory is never unmapped under an I/O (vhost-user.rst: GET_VRING_BASE
    /// stops the ring; here its in-flight requests are finished and used first).
    /// </summary>
    private void RunUring(IDeviceQueue queue, EventFd kick, IoUring ring)
    {
        var io = new IoUringQueueIo(ring);
        bool armControl = true, armKick = true, stopped = false;
        var drain = true; // buffers may have been made available before the ring started
        while (true)
        {
            if (_stopRequested)
                stopped = true;
            if (!stopped && drain && _enabled && Drain(queue, io) == QueueOutcome.NeedsReset)
                stopped = true; // take nothing more; finish what is in flight
            drain = false;
            if (stopped && _device.QueueIoInFlight(queue.Index) == 0)
            {
                ReleaseHeld(queue);
                return;
            }
            if (armControl)
                armControl = !ring.QueuePollMultishot(_control.Fd, IoUringQueueIo.ControlTag);
            if (armKick)
                armKick = !ring.QueuePollMultishot(kick.Fd, IoUringQueueIo.KickTag);
            ring.SubmitAndWait(wait: true);
            var completed = false;
            while (ring.TryTakeCompletion(out var cqe))
            {
                if (IoUringQueueIo.IsIo(cqe.UserData))
                {
                    _device.CompleteIo(queue, (ushort)cqe.UserData, cqe.Result);
                    completed = true;
                    continue;
                }
                var more = (cqe.Flags & IoUring.CqeFlagMore) != 0;
                if (cqe.UserData == IoUringQueueIo.ControlTag)
                {
                    _control.TryRead(out _);
                    armControl |= !more;
                }
                else
                {
                    if (kick.TryRead(out _))
                        Interlocked.Increment(ref _kicks);
                    armKick |= !more;
                }
                if (cqe.Result < 0 && !more)
                    _log.Debug($"queue {Index}: a poll ended with {Errno.Describe(-cqe.Result)}; armed again");
                drain = true;
            }
            if (completed && queue.PublishUsed())
                SignalCall();
        }
    }

    /// <summary>After a host-side failure: waits for the I/O still in flight, so no completion lands after memory is unmapped.</summary>
    private void FinishInFlight(IDeviceQueue queue, IoUring ring)
    {
        try
        {
            while (_device.QueueIoInFlight(queue.Index) > 0)
            {
                ring.SubmitAndWait(wait: true);
                while (ring.TryTakeCompletion(out var cqe))
                {
                    if (IoUringQueueIo.IsIo(cqe.UserData))
                        _device.CompleteIo(queue, (ushort)cqe.UserData, cqe.Result);
                }
            }
            if (queue.PublishUsed())
                SignalCall();
        }
        catch (Exception e)
        {
            _log.Error($"queue {Index}: could not wait for the I/O in flight: {e.Message}");
        }
    }

    /// <summary>One drain of the available ring. On NeedsReset the queue stops: the call and the err descriptor are signalled here.</summary>
    private QueueOutcome Drain(IDeviceQueue queue, IQueueIo? io)
    {
        var outcome = _device.ProcessQueue(queue, io);
        switch (outcome)
        {
            case QueueOutcome.Interrupt:
                SignalCall();
                break;
            case QueueOutcome.NeedsReset:
                SignalCall(); // completions published before the breach still deserve a notification
                Failed = true;
                var why = _device.Breaches.ResetRequested && queue.LastRingError == RingError.None
                    ? "strict mode stopped at the first driver breach"
                    : $"the ring is corrupt ({queue.LastRingError}, {queue.LastRingErrorValue})";
                _log.Error($"queue {Index}: stopped, device needs reset: {why}. vhost-user has no status register; "
                    + (_err != null ? "signalled the error descriptor" : "no error descriptor was given")
                    + "; the guest must reset the device");
                _err?.Signal();
                break;
        }
        return outcome;
    }

    /// <summary>A ring that stops returns what a test-only <see cref="HeldCompletionsQueue"/> still holds.</summary>
    private void ReleaseHeld(IDeviceQueue queue)
    {
        if (queue is HeldCompletionsQueue held)
        {
            held.ReleaseAll();
            if (queue.PublishUsed())
                SignalCall();
        }
    }

    /// <summary>Makes the worker drain the ring again (from any thread).</summary>
    public void Wake() => _control.Signal(); // false, harmlessly, once the ring is disposed

    private void SignalCall()
    {
        Interlocked.Increment(ref _calls);
        // A concurrent SET_VRING_CALL may dispose the descriptor we read; then use the new one.
        if (Volatile.Read(ref _call) is { } call && !call.Signal())
            Volatile.Read(ref _call)?.Signal();
    }

    public void Dispose()
    {
        Reset();
        _control.Dispose();
    }
}
