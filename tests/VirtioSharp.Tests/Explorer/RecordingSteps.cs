using System.Text.Json;

namespace VirtioSharp.Tests.Explorer;

/// <summary>A recording file's events, and what the page should light up for each.</summary>
internal static class RecordingSteps
{
    public static List<JsonElement> Events(string recordingFile) =>
        File.ReadLines(recordingFile).Skip(1).Select(l => JsonDocument.Parse(l).RootElement.Clone())
            .Where(e => !e.TryGetProperty("end", out _)).ToList();

    public static string Kind(JsonElement e) => e.GetProperty("k").GetString()!;
    public static long Request(JsonElement e) => e.TryGetProperty("r", out var r) ? r.GetInt64() : 0;
    public static int Queue(JsonElement e) => e.TryGetProperty("q", out var q) ? q.GetInt32() : -1;
    public static int Index(JsonElement e) => e.GetProperty("i").GetInt32();
    public static long Value(JsonElement e) => e.GetProperty("v").GetInt64();

    /// <summary>Packed-ring events carry the wrap counter they used (2.8.1).</summary>
    public static bool Packed(JsonElement e) => e.TryGetProperty("wrap", out _);
    public static int Wrap(JsonElement e) => e.GetProperty("wrap").GetInt32();
    public static string Name(JsonElement e) => e.GetProperty("name").GetString()!;
    public static string Actor(JsonElement e) => e.GetProperty("a").GetString()!;

    /// <summary>The element id a step's slot has in the page, for the ring steps a student follows; null for others.</summary>
    public static string? Slot(JsonElement e) => Kind(e) switch
    {
        // A packed ring is one descriptor ring: every ring step lights a row of it.
        "DescriptorWrite" or "DescriptorRead" or "DescriptorFlags" or "AvailRingRead" or "UsedRingWrite" or "UsedRingRead" when Packed(e) => $"desc-{Index(e)}",
        "WrapCounter" => $"wrap-{Name(e)}-{Actor(e)}",
        "EventSuppression" => $"evs-{Name(e)}",
        "DescriptorWrite" or "DescriptorRead" when !e.TryGetProperty("tbl", out _) => $"desc-{Index(e)}",
        "AvailRingWrite" or "AvailRingRead" => $"avail-{Index(e)}",
        "UsedRingWrite" or "UsedRingRead" => $"used-{Index(e)}",
        "AvailIndex" => "avail-idx",
        "UsedIndex" => "used-idx",
        "Register" => $"reg-{e.GetProperty("name").GetString()}",
        _ => null,
    };
}
