using System.Globalization;
using System.Text;
using System.Text.Json;

namespace VirtioSharp.Diagnostics;

/// <summary>
/// The recording file: JSON lines. The first line names the format and its version and describes
/// the run; each following line is one <see cref="RingEvent"/>; the last line says the recording
/// ended (a file without it was cut short). Ring geometry travels as QueueSetup events.
/// </summary>
public static class RecordingFormat
{
    public const string Magic = "vblk-ring-recording";
    /// <summary>2: packed-ring events (WrapCounter, EventSuppression, DescriptorFlags) and vhost-user kicks and calls. Version 1 files read as before.</summary>
    public const int Version = 2;
    /// <summary>Largest recording file read back (a bound, not a promise of speed).</summary>
    public const long MaxFileBytes = 256L << 20;

    /// <summary>Writes one event as a JSON object, leaving out fields at their defaults.</summary>
    public static void WriteEvent(Utf8JsonWriter w, RingEvent e)
    {
        w.WriteStartObject();
        w.WriteNumber("seq", e.Seq);
        w.WriteNumber("t", e.TimeNs);
        w.WriteString("k", e.Kind.ToString());
        w.WriteString("a", e.Actor);
        if (e.Queue >= 0) w.WriteNumber("q", e.Queue);
        if (e.Request > 0) w.WriteNumber("r", e.Request);
        if (e.Head >= 0) w.WriteNumber("h", e.Head);
        if (e.Index >= 0) w.WriteNumber("i", e.Index);
        if (e.Address != 0) w.WriteString("addr", Hex(e.Address));
        if (e.Length != 0) w.WriteNumber("len", e.Length);
        if (e.Flags != 0) w.WriteNumber("flags", e.Flags);
        if (e.Next != 0) w.WriteNumber("next", e.Next);
        WriteU64(w, "v", e.Value);
        if (e.OldValue != 0) WriteU64(w, "ov", e.OldValue);
        if (e.Name is not null) w.WriteString("name", e.Name);
        if (e.Offset != 0) w.WriteNumber("off", e.Offset);
        if (e.Write) w.WriteBoolean("w", true);
        if (e.Suppressed) w.WriteBoolean("sup", true);
        if (e.Reason is not null) w.WriteString("why", e.Reason);
        if (e.Table != 0) w.WriteString("tbl", Hex(e.Table));
        if (e.WrapCounter >= 0) w.WriteNumber("wrap", e.WrapCounter);
        if (e.Data is { Length: > 0 }) w.WriteString("data", Convert.ToHexString(e.Data));
        if (e.Section is not null) w.WriteString("sec", e.Section);
        if (e.Words is not null) w.WriteString("words", e.Words);
        w.WriteString("text", e.Text);
        w.WriteEndObject();
    }

    public static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>Numbers a page's script can hold exactly stay numbers; larger ones (a hostile guest's) become hex strings.</summary>
    private static void WriteU64(Utf8JsonWriter w, string name, ulong v)
    {
        if (v < 1UL << 53)
            w.WriteNumber(name, v);
        else
            w.WriteString(name, Hex(v));
    }

    public static void WriteHeader(Utf8JsonWriter w, RecordingInfo info)
    {
        w.WriteStartObject();
        w.WriteString("format", Magic);
        w.WriteNumber("version", Version);
        w.WriteString("source", info.Source);
        w.WriteString("transport", info.Transport);
        w.WriteString("device", "virtio-blk");
        w.WriteString("created", info.Created.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
        if (info.MmioBase != 0) w.WriteString("mmioBase", Hex(info.MmioBase));
        w.WriteNumber("requestLimit", info.RequestLimit);
        if (info.Note is not null) w.WriteString("note", info.Note);
        w.WriteEndObject();
    }

    public static void WriteEnd(Utf8JsonWriter w, long events, long dropped, string reason)
    {
        w.WriteStartObject();
        w.WriteBoolean("end", true);
        w.WriteNumber("events", events);
        w.WriteNumber("dropped", dropped);
        w.WriteString("reason", reason);
        w.WriteEndObject();
    }

    /// <summary>Reads a recording file back, checking it line by line; any fault is one clear sentence.</summary>
    public static Recording Read(string path)
    {
        FileInfo info;
        try
        {
            info = new FileInfo(path);
            if (!info.Exists)
                throw new RecordingException($"'{path}' does not exist");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new RecordingException($"cannot read '{path}': {e.Message}");
        }
        if (info.Length > MaxFileBytes)
            throw new RecordingException($"'{path}' is {info.Length} bytes, more than the {MaxFileBytes >> 20} MiB a recording may have");
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path, new UTF8Encoding(false, throwOnInvalidBytes: true));
        }
        catch (DecoderFallbackException)
        {
            throw new RecordingException($"'{path}' is not a recording (not UTF-8 text)");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecordingException($"cannot read '{path}': {e.Message}");
        }
        return Parse(path, lines);
    }

    public static Recording Parse(string name, IReadOnlyList<string> lines)
    {
        if (lines.Count == 0 || lines[0].Length == 0)
            throw new RecordingException($"'{name}' is not a recording (it is empty)");
        JsonElement header;
        try
        {
            header = JsonDocument.Parse(lines[0]).RootElement.Clone();
        }
        catch (JsonException)
        {
            throw new RecordingException($"'{name}' is not a recording (its first line is not a {Magic} header)");
        }
        if (header.ValueKind != JsonValueKind.Object || !header.TryGetProperty("format", out var f) || f.ValueKind != JsonValueKind.String || f.GetString() != Magic)
            throw new RecordingException($"'{name}' is not a recording (its first line is not a {Magic} header)");
        if (!header.TryGetProperty("version", out var v) || !v.TryGetInt32(out var version) || version < 1)
            throw new RecordingException($"'{name}' has no valid format version");
        if (version > Version)
            throw new RecordingException($"'{name}' was written by a newer vblk (recording format {version}; this one reads up to {Version})");

        var events = new List<JsonElement>(lines.Count);
        JsonElement? end = null;
        for (var i = 1; i < lines.Count; i++)
        {
            if (lines[i].Length == 0)
                continue;
            if (end is not null)
                throw new RecordingException($"'{name}' is damaged: line {i + 1} follows the end record");
            JsonElement e;
            try
            {
                e = JsonDocument.Parse(lines[i]).RootElement.Clone();
            }
            catch (JsonException)
            {
                throw new RecordingException(i == lines.Count - 1
                    ? $"'{name}' is truncated: its last line (line {i + 1}) is cut short"
                    : $"'{name}' is damaged: line {i + 1} is not JSON");
            }
            if (e.ValueKind != JsonValueKind.Object)
                throw new RecordingException($"'{name}' is damaged: line {i + 1} is not a JSON object");
            if (e.TryGetProperty("end", out var isEnd) && isEnd.ValueKind == JsonValueKind.True)
            {
                end = e;
                continue;
            }
            if (!e.TryGetProperty("k", out var k) || k.ValueKind != JsonValueKind.String || !Enum.TryParse<RingEventKind>(k.GetString(), out _)
                || !e.TryGetProperty("seq", out var seq) || seq.ValueKind != JsonValueKind.Number)
                throw new RecordingException($"'{name}' is damaged: line {i + 1} is not a ring event");
            events.Add(e);
        }
        if (end is null)
            throw new RecordingException($"'{name}' is truncated: {events.Count} events and no end record (the recording was cut short)");
        return new Recording(header, events, end.Value);
    }
}

/// <summary>A recording read back: its header, its events and its end record, all checked.</summary>
public sealed record Recording(JsonElement Header, IReadOnlyList<JsonElement> Events, JsonElement End);

/// <summary>A recording file that cannot be read, in one sentence.</summary>
public sealed class RecordingException(string message) : Exception(message);

/// <summary>What the header of a recording says about the run.</summary>
public sealed record RecordingInfo(string Source, string Transport, DateTime Created, int RequestLimit, ulong MmioBase = 0, string? Note = null);

/// <summary>Streams a recording: the header now, one line per event, the end record when it stops.</summary>
public sealed class RecordingWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly Utf8JsonWriter _json;
    private readonly long _maxBytes;
    private long _bytes;
    private bool _ended;

    public RecordingWriter(Stream stream, RecordingInfo info, long maxBytes = 64L << 20)
    {
        _stream = stream;
        _maxBytes = maxBytes;
        _json = new Utf8JsonWriter(stream, new JsonWriterOptions { SkipValidation = true });
        RecordingFormat.WriteHeader(_json, info);
        NewLine();
    }

    /// <summary>Bytes written so far.</summary>
    public long Bytes => _bytes;
    public bool Full => Bytes >= _maxBytes;

    public void Write(RingEvent e)
    {
        if (_ended || Full)
            return;
        RecordingFormat.WriteEvent(_json, e);
        NewLine();
    }

    public void End(long events, long dropped, string reason)
    {
        if (_ended)
            return;
        _ended = true;
        RecordingFormat.WriteEnd(_json, events, dropped, Full ? $"size limit of {_maxBytes} bytes reached" : reason);
        NewLine();
        _json.Flush();
        _stream.Flush();
    }

    private void NewLine()
    {
        _json.Flush();
        _stream.WriteByte((byte)'\n');
        _bytes += _json.BytesCommitted + 1;
        _json.Reset();
    }

    public void Dispose()
    {
        _json.Dispose();
        _stream.Dispose();
    }
}
