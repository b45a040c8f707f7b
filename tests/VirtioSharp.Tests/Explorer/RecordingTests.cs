using VirtioSharp.Cli;
using VirtioSharp.Cli.Explorer;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Explorer;

/// <summary>Recordings: bounded, numbered by request, written and read back; bad files refused in one line.</summary>
public sealed class RecordingTests
{
    private static RingEvent Pop(int head) => RingEvents.AvailRingRead(0, head, head, (ushort)(head + 1), 0x2000);
    private static RingEvent Used(int head) => RingEvents.UsedRingWrite(0, head, head, 1, 0x3000);
    private static RingEvent Decision() => RingEvents.InterruptDecision(0, false, "test");

    private static List<string> Lines(int requests)
    {
        var recorder = new RingRecorder(new RingRecorderOptions { MaxRequests = requests });
        recorder.Event(RingEvents.QueueSetup(0, 8, 0x1000, 0x2000, 0x3000, false, false, "split"));
        for (var h = 0; h < requests; h++)
        {
            recorder.Event(Pop(h));
            recorder.Event(Used(h));
            recorder.Event(Decision());
        }
        recorder.Finish("test");
        return ExplorerPage.ToLines(new RecordingInfo("test", "vhost-user", DateTime.UtcNow, requests), recorder.Events, "test", 0);
    }

    [Fact]
    public void Recorder_keeps_the_first_N_requests_of_a_device_and_then_stops()
    {
        var recorder = new RingRecorder(new RingRecorderOptions { MaxRequests = 2 });
        for (var h = 0; h < 5; h++)
        {
            recorder.Event(Pop(h));
            recorder.Event(Used(h));
            recorder.Event(Decision());
        }
        Assert.False(recorder.Recording);
        Assert.Equal("the first 2 requests recorded", recorder.StopReason);
        var events = recorder.Events;
        Assert.Equal(6, events.Count);
        Assert.Equal([1L, 1, 0, 2, 2, 0], events.Select(e => e.Request));
        Assert.Equal(Enumerable.Range(1, 6).Select(i => (long)i), events.Select(e => e.Seq));
    }

    [Fact]
    public void Requests_are_numbered_as_the_driver_makes_them_and_the_device_takes_them()
    {
        var recorder = new RingRecorder(new RingRecorderOptions { MaxRequests = 0 });
        recorder.Event(RingEvents.Request(0, -1, 0, 0, null, "driver"));
        recorder.Event(RingEvents.DescriptorWrite(0, 5, 5, 0x100, 16, 1, 6, 0, "header"));
        recorder.Event(RingEvents.Request(0, -1, 1, 8, null, "driver"));
        recorder.Event(RingEvents.DescriptorWrite(0, 2, 2, 0x200, 16, 1, 3, 0, "header"));
        recorder.Event(Pop(5));
        recorder.Event(Pop(2));
        recorder.Event(RingEvents.Status("driver", 0, 2, 0x300, 0, null));
        Assert.Equal([1L, 1, 2, 2, 1, 2, 2], recorder.Events.Select(e => e.Request));
    }

    [Fact]
    public void Recording_stops_at_the_event_bound_and_the_file_size_bound()
    {
        var byEvents = new RingRecorder(new RingRecorderOptions { MaxRequests = 0, MaxEvents = 10 });
        for (var i = 0; i < 100; i++)
            byEvents.Step("device", "x");
        Assert.Equal(10, byEvents.Events.Count);
        Assert.False(byEvents.Recording);

        var stream = new MemoryStream();
        using var writer = new RecordingWriter(stream, new RecordingInfo("t", "t", DateTime.UtcNow, 0), maxBytes: 4096);
        var bySize = new RingRecorder(new RingRecorderOptions { MaxRequests = 0, Writer = writer, Keep = false });
        for (var i = 0; i < 1000 && bySize.Recording; i++)
            bySize.Step("device", new string('x', 100));
        Assert.False(bySize.Recording);
        Assert.InRange(stream.ToArray().Length, 4096, 4096 + 1024);
        var text = System.Text.Encoding.UTF8.GetString(stream.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains("\"end\":true", text[^1], StringComparison.Ordinal);
        Assert.NotNull(RecordingFormat.Parse("t", text)); // what was written reads back
    }

    [Fact]
    public void A_recording_reads_back_with_its_geometry_and_every_event()
    {
        var r = RecordingFormat.Parse("t", Lines(3));
        Assert.Equal(RecordingFormat.Magic, r.Header.GetProperty("format").GetString());
        Assert.Equal(1 + 3 * 3, r.Events.Count);
        var setup = r.Events[0];
        Assert.Equal("QueueSetup", setup.GetProperty("k").GetString());
        Assert.Equal(8, setup.GetProperty("v").GetInt32());
        Assert.Equal("0x1000", setup.GetProperty("addr").GetString());
    }

    [Fact]
    public void Values_a_page_cannot_hold_exactly_are_written_as_hex()
    {
        var recorder = new RingRecorder();
        recorder.Event(RingEvents.DescriptorRead(0, 1, 1, ulong.MaxValue, 1, 0, 0, 0));
        recorder.Event(RingEvents.Request(0, 1, 0, ulong.MaxValue - 1, null));
        var lines = ExplorerPage.ToLines(new RecordingInfo("t", "t", DateTime.UtcNow, 1), recorder.Events, "t", 0);
        Assert.Contains("\"addr\":\"0xffffffffffffffff\"", lines[1], StringComparison.Ordinal);
        Assert.Contains("\"v\":\"0xfffffffffffffffe\"", lines[2], StringComparison.Ordinal);
    }

    [Fact]
    public void Serve_recorder_writes_one_bounded_file_per_connection()
    {
        using var dir = new TempDir();
        var path = dir.File("rec.jsonl");
        using (var serve = new ServeRecorder(path, 2, null))
        {
            for (var c = 1; c <= 2; c++)
            {
                serve.Event(RingEvents.Connection(c, open: true));
                Assert.True(serve.Active);
                for (var h = 0; h < 4; h++)
                {
                    serve.Event(Pop(h));
                    serve.Event(Used(h));
                    serve.Event(Decision());
                }
                Assert.False(serve.Active); // the first 2 requests are in; the rest is not recorded
                serve.Event(RingEvents.Connection(c, open: false));
            }
        }
        foreach (var file in new[] { path, ServeRecorder.FileFor(path, 2) })
        {
            var r = RecordingFormat.Read(file);
            Assert.Equal(6, r.Events.Count);
            Assert.Equal(2, r.Events.Max(e => e.TryGetProperty("r", out var n) ? n.GetInt32() : 0));
        }
        Assert.Equal(dir.File("rec-2.jsonl"), ServeRecorder.FileFor(path, 2));
    }

    public static TheoryData<string, string, string> BadFiles => new()
    {
        { "truncated", "cut", "is truncated" },
        { "cut-mid-line", "cut-mid-line", "is truncated" },
        { "newer", "newer", "was written by a newer vblk (recording format 99" },
        { "not-json", "not a recording at all\n", "is not a recording" },
        { "other-json", "{\"format\":\"something-else\",\"version\":1}\n", "is not a recording" },
        { "empty", "", "is not a recording" },
        { "binary", "\u0089PNG\r\n\u001a\n\0\0", "is not a recording" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void View_refuses_a_bad_file_in_one_line_and_writes_no_page(string name, string content, string expected)
    {
        using var dir = new TempDir();
        var file = dir.File(name + ".jsonl");
        var good = Lines(2);
        switch (content)
        {
            case "cut":
                File.WriteAllLines(file, good.Take(good.Count - 1));
                break;
            case "cut-mid-line":
                File.WriteAllText(file, string.Join('\n', good)[..^30]);
                break;
            case "newer":
                File.WriteAllLines(file, [good[0].Replace($"\"version\":{RecordingFormat.Version}", "\"version\":99", StringComparison.Ordinal), .. good.Skip(1)]);
                break;
            default:
                File.WriteAllBytes(file, content.Select(c => (byte)c).ToArray());
                break;
        }
        var page = dir.File("page.html");
        var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "view", file, "--html", page], TimeSpan.FromMinutes(1));
        Assert.NotEqual(0, code);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain(" at ", lines[0], StringComparison.Ordinal);
        Assert.False(File.Exists(page), "a page was written for a bad recording");
    }

    [Fact]
    public void View_still_reads_a_version_1_recording()
    {
        using var dir = new TempDir();
        var lines = Lines(2);
        lines[0] = lines[0].Replace($"\"version\":{RecordingFormat.Version}", "\"version\":1", StringComparison.Ordinal);
        Assert.Contains("\"version\":1", lines[0], StringComparison.Ordinal);
        File.WriteAllLines(dir.File("v1.jsonl"), lines);
        var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "view", dir.File("v1.jsonl"), "--html", dir.File("page.html")], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, output);
        Assert.True(File.Exists(dir.File("page.html")));
    }

    [Fact]
    public void View_embeds_a_hostile_recordings_strings_escaped()
    {
        using var dir = new TempDir();
        const string hostile = "</script><script>alert(1)</script><img src=x onerror=alert(2)>";
        var recorder = new RingRecorder();
        recorder.Event(RingEvents.QueueSetup(0, 8, 0x1000, 0x1100, 0x1104, true, false, "packed"));
        recorder.Step("device", hostile);
        // A guest's bytes shown with a request, and names a crafted file might carry.
        recorder.Event(RingEvents.Request(0, 1, 0, 0, System.Text.Encoding.ASCII.GetBytes(hostile)));
        recorder.Event(new RingEvent { Kind = RingEventKind.WrapCounter, Queue = 0, Name = "__proto__", Text = hostile, WrapCounter = 0 });
        recorder.Finish("test");
        File.WriteAllLines(dir.File("hostile.jsonl"), ExplorerPage.ToLines(new RecordingInfo(hostile, hostile, DateTime.UtcNow, 1), recorder.Events, hostile, 0));
        var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "view", dir.File("hostile.jsonl"), "--html", dir.File("page.html")], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, output);
        var html = File.ReadAllText(dir.File("page.html"));
        const string open = "id=\"recording\">";
        var start = html.IndexOf(open, StringComparison.Ordinal) + open.Length;
        var data = html[start..html.IndexOf("</script>", start, StringComparison.Ordinal)];
        Assert.Contains("__proto__", data, StringComparison.Ordinal); // the whole recording is inside the element
        Assert.DoesNotContain("<", data, StringComparison.Ordinal); // nothing in the embedded recording can open or close an element
        Assert.DoesNotContain(">", data, StringComparison.Ordinal);
        Assert.Contains("\\u003cscript\\u003e", data, StringComparison.OrdinalIgnoreCase); // the encoder writes \\u003C
    }

    [Fact]
    public void View_renders_a_good_file()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir.File("good.jsonl"), Lines(2));
        var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "view", dir.File("good.jsonl"), "--html", dir.File("page.html")], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, output);
        var html = File.ReadAllText(dir.File("page.html"));
        Assert.Contains("\"format\":\"vblk-ring-recording\"", html, StringComparison.Ordinal);
        Assert.DoesNotContain("{{RECORDING}}", html, StringComparison.Ordinal);
    }
}
