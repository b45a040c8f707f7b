namespace VirtioSharp.Diagnostics;

/// <summary>How strictly a device judges the driver (see docs/conformance.md).</summary>
public enum StrictMode
{
    /// <summary>Handle every error safely; log only what forces a non-OK answer.</summary>
    Off,
    /// <summary>Check every device-observable driver requirement, log each breach, carry on where the spec allows.</summary>
    Warn,
    /// <summary>As Warn, and set DEVICE_NEEDS_RESET at the first breach.</summary>
    Fail,
}

/// <summary>One broken driver requirement: the spec section, where, what was expected and what was found.</summary>
public sealed record DriverBreach(string Section, int Queue, int Descriptor, string Expected, string Found)
{
    public override string ToString()
    {
        var where = Queue < 0 ? "device" : Descriptor < 0 ? $"queue {Queue}" : $"queue {Queue} descriptor {Descriptor}";
        return $"spec {Section}: {where}: expected {Expected}; found {Found}";
    }
}

/// <summary>
/// Collects driver breaches for one device: logs each, counts them by section, and tells the
/// transport when strict=fail asks for DEVICE_NEEDS_RESET. Thread-safe (queues run on their own threads).
/// </summary>
public sealed class BreachReporter(ILogSink? log, StrictMode mode)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, int> _bySection = [];
    private readonly List<DriverBreach> _recent = [];
    private int _total;

    public StrictMode Mode { get; } = mode;
    /// <summary>Told of every breach as it is reported (a recording notes it beside the step).</summary>
    public Action<DriverBreach>? Observer { get; set; }
    public bool Strict => Mode != StrictMode.Off;
    public int Total { get { lock (_lock) return _total; } }
    /// <summary>Set when strict=fail saw a breach; the transport turns it into DEVICE_NEEDS_RESET.</summary>
    public bool ResetRequested { get; private set; }

    /// <summary>Records a breach: counted, logged (boundedly), and with strict=fail a reset request.</summary>
    public void Report(DriverBreach breach)
    {
        int count;
        lock (_lock)
        {
            _total++;
            count = _bySection[breach.Section] = _bySection.GetValueOrDefault(breach.Section) + 1;
            if (_recent.Count < 1000)
                _recent.Add(breach);
            if (Mode == StrictMode.Fail)
                ResetRequested = true;
        }
        Observer?.Invoke(breach);
        // A hostile driver must not flood the log: each section is logged a bounded number of times.
        var limit = Strict ? 100 : 20;
        if (count <= limit)
            log.Warn($"driver breach: {breach}");
        if (count == limit)
            log.Warn($"further breaches of spec {breach.Section} are counted, not logged");
    }

    public void Report(string section, int queue, int descriptor, string expected, string found) =>
        Report(new DriverBreach(section, queue, descriptor, expected, found));

    public IReadOnlyList<DriverBreach> Breaches { get { lock (_lock) return _recent.ToArray(); } }

    public IReadOnlyDictionary<string, int> CountsBySection { get { lock (_lock) return new Dictionary<string, int>(_bySection); } }

    /// <summary>One line per section, for the summary printed when the driver resets or leaves.</summary>
    public string Summary()
    {
        lock (_lock)
        {
            if (_total == 0)
                return "driver breaches: none";
            var parts = _bySection.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key} x{kv.Value}");
            return $"driver breaches: {_total} ({string.Join(", ", parts)})";
        }
    }

    public void Clear()
    {
        lock (_lock)
        {
            _total = 0;
            _bySection.Clear();
            _recent.Clear();
            ResetRequested = false;
        }
    }
}
