namespace VirtioSharp.Diagnostics;

public enum LogLevel { Debug, Info, Warning, Error }

/// <summary>Where the stack's log lines go (the CLI prints them; tests collect them).</summary>
public interface ILogSink
{
    void Write(LogLevel level, string message);
}

public static class LogSinkExtensions
{
    public static void Info(this ILogSink? log, string message) => log?.Write(LogLevel.Info, message);
    public static void Warn(this ILogSink? log, string message) => log?.Write(LogLevel.Warning, message);
    public static void Error(this ILogSink? log, string message) => log?.Write(LogLevel.Error, message);
    public static void Debug(this ILogSink? log, string message) => log?.Write(LogLevel.Debug, message);
}

/// <summary>Writes one line per message to standard error, with a time stamp.</summary>
public sealed class ConsoleLogSink(LogLevel minimum = LogLevel.Info) : ILogSink
{
    private readonly Lock _lock = new();

    public void Write(LogLevel level, string message)
    {
        if (level < minimum)
            return;
        var tag = level switch { LogLevel.Warning => "warn", LogLevel.Error => "error", LogLevel.Debug => "debug", _ => "info" };
        lock (_lock)
            Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {tag}: {message}");
    }
}

/// <summary>Keeps every line, for tests.</summary>
public sealed class ListLogSink : ILogSink
{
    private readonly List<(LogLevel Level, string Message)> _lines = [];

    public void Write(LogLevel level, string message)
    {
        lock (_lines)
            _lines.Add((level, message));
    }

    public IReadOnlyList<(LogLevel Level, string Message)> Lines
    {
        get { lock (_lines) return _lines.ToArray(); }
    }

    public bool Contains(string text) => Lines.Any(l => l.Message.Contains(text, StringComparison.Ordinal));
}
