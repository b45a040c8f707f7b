using System.Diagnostics;

namespace VirtioSharp.Diagnostics;

/// <summary>What a recording holds and where its events go.</summary>
public sealed class RingRecorderOptions
{
    /// <summary>Requests recorded at most; events of later requests are dropped (0: no limit).</summary>
    public int MaxRequests { get; init; } = 200;
    /// <summary>Events kept at most, whatever the requests: a hard bound on memory and file size.</summary>
    public int MaxEvents { get; init; }
    /// <summary>Where the text trace goes (the console); sees every event while it is active.</summary>
    public ITraceSink? Inner { get; init; }
    /// <summary>Streams each event as it is recorded (a recording file); null keeps them in memory only.</summary>
    public RecordingWriter? Writer { get; init; }
    /// <summary>Keep events in memory (for a page made at the end of the run).</summary>
    public bool Keep { get; init; } = true;

    internal int EventLimit => MaxEvents > 0 ? MaxEvents : MaxRequests > 0 ? MaxRequests * 64 + 4096 : 1_000_000;
}

/// <summary>
/// Collects <see cref="RingEvent"/>s from every part of a run (both queue halves, the transport,
/// the device's breach checks), numbers them, gives each the request it belongs to, and stops
/// once the first <see cref="RingRecorderOptions.MaxRequests"/> requests are done. Thread-safe:
/// the driver, the device's queue threads and the interrupt line all report here.
/// </summary>
public sealed class RingRecorder : ITraceSink
{
    private readonly Lock _lock = new();
    private readonly RingRecorderOptions _options;
    private readonly List<RingEvent> _events = [];
    private readonly Dictionary<(int Queue, int Head), long> _requestOf = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _seq, _requests, _completed, _dropped;
    private readonly Dictionary<int, long> _announced = []; // queue -> request the driver just described
    private bool _hasDriver;
    private volatile bool _finished;

    public RingRecorder(RingRecorderOptions? options = null) => _options = options ?? new RingRecorderOptions();

    /// <summary>True while recording or while the text trace wants events.</summary>
    public bool Active => !_finished || _options.Inner is { Active: true };
    public bool Recording => !_finished;
    public long Dropped { get { lock (_lock) return _dropped; } }
    public long Requests { get { lock (_lock) return _requests; } }
    public string? StopReason { get; private set; }

    public IReadOnlyList<RingEvent> Events { get { lock (_lock) return _events.ToArray(); } }

    public void Step(string actor, string text) => Event(RingEvents.Note(actor, text));

    /// <summary>Records a strict-mode breach at the point it was found.</summary>
    public void Breach(DriverBreach breach)
    {
        if (Active)
            Event(RingEvents.Breach(breach));
    }

    public void Event(RingEvent e)
    {
        if (_options.Inner is { Active: true } inner)
            inner.Event(e);
        if (_finished)
            return;
        lock (_lock)
        {
            if (_finished)
                return;
            e.Request = RequestOf(e);
            if (_options.MaxRequests > 0 && e.Request > _options.MaxRequests)
            {
                _dropped++;
                return;
            }
            e.Seq = ++_seq;
            e.TimeNs = (long)(_clock.ElapsedTicks * (1e9 / Stopwatch.Frequency));
            if (_options.Keep)
                _events.Add(e);
            _options.Writer?.Write(e);
            if (_options.Writer is { Full: true })
            {
                FinishLocked("size limit of the recording file reached");
                return;
            }
            if (e.Request > 0 && (e.Kind == RingEventKind.Status && e.Actor == "driver" || e.Kind == RingEventKind.UsedRingWrite && !_hasDriver))
                _completed++;
            if (_seq >= _options.EventLimit)
                FinishLocked($"event limit {_options.EventLimit} reached");
            else if (_options.MaxRequests > 0 && _completed >= _options.MaxRequests
                && (e.Kind == RingEventKind.Interrupt && !_hasDriver || e.Kind == RingEventKind.Status && e.Actor == "driver"))
                FinishLocked(_options.MaxRequests == 1 ? "the first request recorded" : $"the first {_options.MaxRequests} requests recorded");
        }
    }

    /// <summary>Gives an event the request it belongs to: requests are numbered as the driver makes them (or, with no driver in sight, as the device takes them).</summary>
    private long RequestOf(RingEvent e)
    {
        if (e.Kind == RingEventKind.Request && e.Actor == "driver" && e.Queue >= 0)
        {
            // The driver describes a request before it places it: its descriptors take this number.
            _hasDriver = true;
            return _announced[e.Queue] = ++_requests;
        }
        if (e.Head < 0 || e.Queue < 0)
            return 0;
        var key = (e.Queue, e.Head);
        if (e.Actor == "driver")
            _hasDriver = true;
        switch (e.Kind)
        {
            case RingEventKind.DescriptorWrite when e.Name is "header" or "table" && e.Table == 0:
                if (_announced.Remove(e.Queue, out var announced))
                    return _requestOf[key] = announced;
                return _requestOf[key] = ++_requests;
            case RingEventKind.AvailRingRead:
                if (_hasDriver && _requestOf.TryGetValue(key, out var id))
                    return id;
                return _requestOf[key] = ++_requests;
            default:
                return _requestOf.GetValueOrDefault(key);
        }
    }

    /// <summary>Stops recording (the text trace carries on) and ends the file.</summary>
    public void Finish(string reason)
    {
        lock (_lock)
            FinishLocked(reason);
    }

    private void FinishLocked(string reason)
    {
        if (_finished)
            return;
        _finished = true;
        StopReason = reason;
        _options.Writer?.End(_seq, _dropped, reason);
    }
}
