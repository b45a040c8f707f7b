using System.Reflection;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli.Explorer;

/// <summary>
/// Makes the one-file HTML explorer: the page template (an embedded resource with inline CSS and
/// script, nothing fetched) with the recording embedded as JSON in a script element. Every string
/// in the recording may come from a guest, so the JSON is escaped for a script element and the
/// page's script shows values with textContent only.
/// </summary>
public static class ExplorerPage
{
    private const string Placeholder = "{{RECORDING}}";

    public static string Template()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("VirtioSharp.Cli.Explorer.explorer.html")
            ?? throw new InvalidOperationException("the explorer page template is missing from the build");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>The page for a recording read back (and checked) by <see cref="RecordingFormat"/>.</summary>
    public static string Render(Recording recording)
    {
        var buffer = new MemoryStream();
        // The default encoder writes <, >, &, quotes and every non-ASCII character (U+2028/2029 included) as \uXXXX.
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.Default }))
        {
            w.WriteStartObject();
            w.WritePropertyName("header");
            recording.Header.WriteTo(w);
            w.WritePropertyName("events");
            w.WriteStartArray();
            foreach (var e in recording.Events)
                e.WriteTo(w);
            w.WriteEndArray();
            w.WritePropertyName("end");
            recording.End.WriteTo(w);
            w.WriteEndObject();
        }
        var json = ForScriptElement(Encoding.UTF8.GetString(buffer.ToArray()));
        var template = Template();
        var at = template.IndexOf(Placeholder, StringComparison.Ordinal);
        return string.Concat(template.AsSpan(0, at), json, template.AsSpan(at + Placeholder.Length));
    }

    /// <summary>
    /// JSON text that cannot end or confuse the script element holding it: no '&lt;' (so no
    /// "&lt;/script"), no '&gt;' or '&amp;', no U+2028/U+2029 line separators. The encoder already
    /// escapes them; this keeps it so whatever the encoder's settings.
    /// </summary>
    public static string ForScriptElement(string json) => json
        .Replace("<", "\\u003c", StringComparison.Ordinal)
        .Replace(">", "\\u003e", StringComparison.Ordinal)
        .Replace("&", "\\u0026", StringComparison.Ordinal)
        .Replace("\u2028", "\\u2028", StringComparison.Ordinal)
        .Replace("\u2029", "\\u2029", StringComparison.Ordinal);

    /// <summary>The page for events recorded in this process (the demo).</summary>
    public static string Render(RecordingInfo info, IReadOnlyList<RingEvent> events, string reason, long dropped)
    {
        var lines = ToLines(info, events, reason, dropped);
        return Render(RecordingFormat.Parse("the demo's recording", lines));
    }

    /// <summary>Recorded events as the lines of a recording file.</summary>
    public static List<string> ToLines(RecordingInfo info, IReadOnlyList<RingEvent> events, string reason, long dropped)
    {
        var lines = new List<string>(events.Count + 2);
        var buffer = new MemoryStream();
        lines.Add(Line(buffer, w => RecordingFormat.WriteHeader(w, info)));
        foreach (var e in events)
            lines.Add(Line(buffer, w => RecordingFormat.WriteEvent(w, e)));
        lines.Add(Line(buffer, w => RecordingFormat.WriteEnd(w, events.Count, dropped, reason)));
        return lines;
    }

    private static string Line(MemoryStream buffer, Action<Utf8JsonWriter> write)
    {
        buffer.SetLength(0);
        using (var w = new Utf8JsonWriter(buffer))
            write(w);
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>Writes <paramref name="html"/> to <paramref name="path"/>; a missing folder is one clear line.</summary>
    public static void Write(string path, string html)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null && !Directory.Exists(dir))
            throw new CliException($"folder '{dir}' does not exist");
        File.WriteAllText(path, html, new UTF8Encoding(false));
    }
}
