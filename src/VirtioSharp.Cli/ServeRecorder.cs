using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli;

/// <summary>
/// `vblk serve --record`: one recording file per front-end connection, each holding the first
/// <c>limit</c> requests; later connections write FILE-2.EXT, FILE-3.EXT ... up to
/// <see cref="MaxFiles"/>, so a back-end that runs for weeks writes a bounded amount.
/// </summary>
public sealed class ServeRecorder(string path, int limit, ILogSink? log) : ITraceSink, IDisposable
{
    public const int MaxFiles = 16;
    /// <summary>Bytes one recording file may reach; the recording ends there.</summary>
    public const long MaxFileBytes = 64L << 20;
    private readonly Lock _lock = new();
    private volatile RingRecorder? _current;
    private RecordingWriter? _writer;
    private int _files;

    public bool Active => _current is { Recording: true };

    public void Step(string actor, string text) => _current?.Step(actor, text);

    public void Breach(DriverBreach breach) => _current?.Breach(breach);

    public void Event(RingEvent e)
    {
        if (e.Kind == RingEventKind.Connection)
        {
            if (e.Value == 1)
                Open((int)e.OldValue);
            else
                Close("the front-end left");
            return;
        }
        _current?.Event(e);
    }

    /// <summary>The file the <paramref name="n"/>-th connection records into.</summary>
    public static string FileFor(string path, int n) =>
        n <= 1 ? path : Path.Combine(Path.GetDirectoryName(path) ?? "", $"{Path.GetFileNameWithoutExtension(path)}-{n}{Path.GetExtension(path)}");

    private void Open(int connection)
    {
        lock (_lock)
        {
            CloseLocked("a new front-end connected");
            if (_files >= MaxFiles)
            {
                if (_files++ == MaxFiles)
                    log.Info($"recording: {MaxFiles} connections recorded; later ones are not");
                return;
            }
            var file = FileFor(path, ++_files);
            try
            {
                var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16);
                _writer = new RecordingWriter(stream, new RecordingInfo("vblk serve", "vhost-user", DateTime.UtcNow, limit,
                    Note: $"front-end connection {connection}; ring addresses are guest-physical"), MaxFileBytes);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                log.Warn($"recording: cannot write {file}: {ex.Message}; this connection is not recorded");
                return;
            }
            _current = new RingRecorder(new RingRecorderOptions { MaxRequests = limit, Writer = _writer, Keep = false });
            log.Info($"recording the first {limit} requests of this connection to {file}");
        }
    }

    private void Close(string reason)
    {
        lock (_lock)
            CloseLocked(reason);
    }

    private void CloseLocked(string reason)
    {
        var current = _current;
        _current = null;
        if (current is null)
            return;
        current.Finish(reason);
        _writer?.Dispose();
        _writer = null;
    }

    public void Dispose() => Close("the back-end stopped");
}
