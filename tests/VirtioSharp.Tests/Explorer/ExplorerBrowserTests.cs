using System.Text.Json;
using OpenQA.Selenium;
using VirtioSharp.Cli.Explorer;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;
using static VirtioSharp.Tests.Explorer.RecordingSteps;

namespace VirtioSharp.Tests.Explorer;

/// <summary>The explorer page in a real browser (Debian's chromium through chromedriver).</summary>
[Trait("Category", "Browser")]
public sealed class ExplorerBrowserTests
{
    /// <summary>Screenshots kept after the run (the first request, step by step).</summary>
    public static string Artefacts { get; } = Path.Combine(AppContext.BaseDirectory, "TestResults", "explorer");

    private static string Text(HeadlessChromium c, string id) => c.Web.FindElement(By.Id(id)).Text;

    private static List<string> Hot(HeadlessChromium c) =>
        c.Web.FindElements(By.CssSelector(".hot")).Select(e => e.GetAttribute("id") ?? "").ToList();

    private static void Demo(TempDir dir, params string[] extra)
    {
        string[] args = [Repo.VblkDll, "demo", "--size", "1M", "--block-size", "64K", "--html", dir.File("demo.html"), "--record", dir.File("demo.jsonl"), .. extra];
        var (code, output) = Repo.Run("dotnet", args, TimeSpan.FromMinutes(2));
        Assert.True(code == 0, $"vblk demo exited with {code}\n{output}");
    }

    [Fact]
    public void Demo_page_loads_offline_and_each_step_of_the_first_request_lights_the_slot_the_recording_names()
    {
        using var dir = new TempDir();
        Demo(dir);
        var events = Events(dir.File("demo.jsonl"));
        var size = Value(events.First(e => Kind(e) == "QueueSetup"));

        using var chrome = new HeadlessChromium();
        chrome.Open(dir.File("demo.html"));
        Assert.Empty(chrome.ConsoleErrors());
        var (resources, page) = chrome.Loads();
        Assert.Empty(resources); // nothing fetched: no script, style, font or image from anywhere
        Assert.StartsWith("file://", page, StringComparison.Ordinal);
        Assert.StartsWith($"step 1 / {events.Count}", Text(chrome, "pos"), StringComparison.Ordinal);

        // Jump to request 1, then step through it with the forward button.
        var first = events.FindIndex(e => Request(e) == 1);
        var last = events.FindLastIndex(e => Request(e) == 1);
        Assert.True(first >= 0 && last > first, "the demo recorded no first request");
        chrome.Web.FindElement(By.CssSelector("#request option[value='1']")).Click();
        Directory.CreateDirectory(Artefacts);
        foreach (var old in Directory.GetFiles(Artefacts, "request1-*.png"))
            File.Delete(old);
        var checkedSlots = 0;
        for (var k = first; k <= last; k++)
        {
            if (k > first)
                chrome.Web.FindElement(By.Id("next")).Click();
            var e = events[k];
            Assert.StartsWith($"step {k + 1} / {events.Count}", Text(chrome, "pos"), StringComparison.Ordinal);
            Assert.Equal(e.GetProperty("text").GetString(), chrome.Script("return document.getElementById('text').textContent"));
            if (e.TryGetProperty("sec", out var sec))
                Assert.Equal($"§{sec.GetString()}", Text(chrome, "section"));
            if (Slot(e) is { } slot)
            {
                Assert.Contains(slot, Hot(chrome));
                checkedSlots++;
            }
            if (Kind(e) is "AvailIndex" or "UsedIndex")
            {
                var v = Value(e);
                Assert.Equal($"idx {v} (next slot {v % size})", Text(chrome, Kind(e) == "AvailIndex" ? "avail-idx" : "used-idx"));
            }
            chrome.Screenshot(Path.Combine(Artefacts, $"request1-step{k + 1:000}-{Kind(e)}.png"));
        }
        Assert.True(checkedSlots >= 8, $"only {checkedSlots} steps of request 1 touch a slot");

        // Back one step: the highlight returns to the slot of the step before.
        chrome.Web.FindElement(By.Id("prev")).Click();
        Assert.StartsWith($"step {last} / ", Text(chrome, "pos"), StringComparison.Ordinal);
        if (Slot(events[last - 1]) is { } before)
            Assert.Contains(before, Hot(chrome));
        Assert.Empty(chrome.ConsoleErrors());
    }

    [Fact]
    public void Demo_page_with_trace_all_shows_the_ring_wrap_and_lights_slot_0_again()
    {
        using var dir = new TempDir();
        Demo(dir, "--queue-size", "8", "--depth", "2", "--trace", "all", "--record-limit", "20");
        var events = Events(dir.File("demo.jsonl"));
        // The ninth head the driver makes available goes into slot 0 again.
        var writes = events.Select((e, k) => (e, k)).Where(x => Kind(x.e) == "AvailRingWrite").ToList();
        Assert.True(writes.Count > 8, $"only {writes.Count} heads made available");
        var (ninth, step) = writes[8];
        Assert.Equal(0, Index(ninth));

        using var chrome = new HeadlessChromium();
        chrome.Web.Navigate().GoToUrl(new Uri(dir.File("demo.html")).AbsoluteUri + $"#step={step + 1}");
        Assert.StartsWith($"step {step + 1} / ", Text(chrome, "pos"), StringComparison.Ordinal);
        Assert.Contains("avail-0", Hot(chrome));
        chrome.Web.FindElement(By.Id("last")).Click();
        Assert.Contains("wrapped", Text(chrome, "wrap"), StringComparison.Ordinal);
        Assert.Empty(chrome.ConsoleErrors());
    }

    [Fact]
    public void Packed_demo_page_lights_each_slot_and_flag_and_shows_both_wrap_counters_flipping()
    {
        using var dir = new TempDir();
        // 5 slots, 3 per request: 4 requests make 12 lists' worth of slots, two laps and more.
        Demo(dir, "--packed", "--queue-size", "5", "--depth", "1", "--trace", "all", "--record-limit", "4");
        var events = Events(dir.File("demo.jsonl"));
        Assert.Equal("packed", events.First(e => Kind(e) == "QueueSetup").GetProperty("name").GetString());
        var flips = events.Where(e => Kind(e) == "WrapCounter").Select(e => (Name(e), Actor(e), Value(e))).ToHashSet();
        foreach (var counter in new[] { "driver", "device" })
            foreach (var keeper in new[] { "driver", "device" })
                foreach (var v in new[] { 0L, 1L })
                    Assert.Contains((counter, keeper, v), flips); // every copy of both counters flipped to 0 and back to 1

        using var chrome = new HeadlessChromium();
        chrome.Open(dir.File("demo.html"));
        Assert.Empty(chrome.ConsoleErrors());
        Assert.Empty(chrome.Loads().Resources);
        Assert.True(chrome.Web.FindElement(By.Id("panel-avail")).GetAttribute("hidden") is not null, "a packed ring has no available ring");
        Assert.Equal("1", chrome.Script("return document.getElementById('wrap-driver-driver').querySelector('b').textContent"));
        Directory.CreateDirectory(Artefacts);
        var lit = 0;
        var firstWrap = true;
        for (var k = 0; k < events.Count; k++)
        {
            if (k > 0)
                chrome.Web.FindElement(By.Id("next")).Click();
            var e = events[k];
            if (Slot(e) is not { } slot)
                continue;
            Assert.StartsWith($"step {k + 1} / {events.Count}", Text(chrome, "pos"), StringComparison.Ordinal);
            var hot = Hot(chrome);
            Assert.Contains(slot, hot);
            lit++;
            switch (Kind(e))
            {
                case "DescriptorFlags":
                    Assert.Contains($"desc-{Index(e)}-AVAIL", hot); // making a list available always flips AVAIL (2.8.1)
                    break;
                case "UsedRingWrite":
                    Assert.Contains($"desc-{Index(e)}-USED", hot); // and using it always flips USED
                    Assert.Equal(Value(e).ToString(System.Globalization.CultureInfo.InvariantCulture), Cell(chrome, Index(e), 4));
                    break;
                case "WrapCounter":
                    Assert.Equal(Value(e).ToString(System.Globalization.CultureInfo.InvariantCulture),
                        chrome.Script($"return document.getElementById('{slot}').querySelector('b').textContent"));
                    if (firstWrap && Name(e) == "driver" && Actor(e) == "driver")
                    {
                        chrome.Screenshot(Path.Combine(Artefacts, "packed-wrap.png"));
                        firstWrap = false;
                    }
                    break;
                case "EventSuppression":
                    Assert.Contains(e.TryGetProperty("w", out var w) && w.ValueKind == JsonValueKind.True ? "written by the" : "read by the", Text(chrome, slot), StringComparison.Ordinal);
                    break;
            }
        }
        Assert.True(lit > 100, $"only {lit} steps light a slot, counter or structure");
        Assert.Empty(chrome.ConsoleErrors());
    }

    /// <summary>Column <paramref name="column"/> of descriptor ring row <paramref name="row"/>.</summary>
    private static string Cell(HeadlessChromium c, int row, int column) =>
        (string)c.Script($"return document.getElementById('desc-{row}').children[{column}].textContent")!;

    [Fact]
    public void Guest_controlled_strings_are_shown_as_text_and_never_run()
    {
        using var dir = new TempDir();
        const string hostile = "</script><script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> & \u2028 \u2029 end";
        var recorder = new RingRecorder();
        recorder.Event(RingEvents.QueueSetup(0, 8, 0x1000, 0x1080, 0x10c0, false, false, "split"));
        recorder.Step("device", hostile);
        recorder.Breach(new DriverBreach("2.7.5", 0, 3, hostile, hostile));
        recorder.Event(RingEvents.Register(0x10001000, 0x50, hostile, 0, true, hostile, "4.2.3.3"));
        recorder.Finish("test");
        var info = new RecordingInfo(hostile, hostile, DateTime.UtcNow, 1);
        var html = ExplorerPage.Render(info, recorder.Events, hostile, 0);
        Assert.DoesNotContain("<script>window", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<img", html, StringComparison.Ordinal);
        File.WriteAllText(dir.File("hostile.html"), html);

        using var chrome = new HeadlessChromium();
        chrome.Open(dir.File("hostile.html"));
        Assert.Equal("undefined", chrome.Script("return typeof window.pwned"));
        Assert.Empty(chrome.Web.FindElements(By.TagName("img")));
        chrome.Web.FindElement(By.Id("next")).Click();
        Assert.Equal(hostile, chrome.Script("return document.getElementById('text').textContent"));
        chrome.Web.FindElement(By.Id("next")).Click();
        Assert.False(chrome.Web.FindElement(By.Id("breach")).GetAttribute("hidden") is not null, "the breach is not shown beside its step");
        Assert.Contains("--strict breach at this step: spec 2.7.5", Text(chrome, "breach"), StringComparison.Ordinal);
        chrome.Web.FindElement(By.Id("next")).Click();
        Assert.Equal("undefined", chrome.Script("return typeof window.pwned"));
        Assert.Empty(chrome.Loads().Resources);
        Assert.Empty(chrome.ConsoleErrors());
    }

    /// <summary>Renders a recording with vblk view and checks the page in the browser; shared with the guest test.</summary>
    internal static void ViewAndCheck(string recording, string page)
    {
        var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "view", recording, "--html", page], TimeSpan.FromMinutes(1));
        Assert.True(code == 0, $"vblk view exited with {code}\n{output}");
        var events = Events(recording);
        var pop = events.FindIndex(e => Kind(e) == "AvailRingRead");
        Assert.True(pop >= 0, "the recording holds no request the device took");
        var steps = events.Where(e => Queue(e) < 0 || Queue(e) == Queue(events[pop])).ToList();
        var step = steps.IndexOf(events[pop]);

        using var chrome = new HeadlessChromium();
        chrome.Web.Navigate().GoToUrl(new Uri(Path.GetFullPath(page)).AbsoluteUri + $"#step={step + 1}");
        Assert.Empty(chrome.ConsoleErrors());
        Assert.Empty(chrome.Loads().Resources);
        Assert.StartsWith($"step {step + 1} / {steps.Count}", Text(chrome, "pos"), StringComparison.Ordinal);
        Assert.Contains(Slot(events[pop])!, Hot(chrome)); // split: the available ring slot; packed: the descriptor ring slot
        if (Packed(events[pop]))
            Assert.Equal(Wrap(events[pop]).ToString(System.Globalization.CultureInfo.InvariantCulture),
                chrome.Script("return document.getElementById('wrap-driver-device').querySelector('b').textContent"));
        // The next steps light what the recording names, up to the first used element.
        for (var k = step + 1; k < steps.Count && k <= step + 12; k++)
        {
            chrome.Web.FindElement(By.Id("next")).Click();
            Assert.StartsWith($"step {k + 1} / ", Text(chrome, "pos"), StringComparison.Ordinal);
            if (Slot(steps[k]) is { } slot)
                Assert.Contains(slot, Hot(chrome));
            if (Kind(steps[k]) == "UsedRingWrite")
                break;
        }
        Assert.Empty(chrome.ConsoleErrors());
        Directory.CreateDirectory(Artefacts);
        chrome.Screenshot(Path.Combine(Artefacts, "guest-recording.png"));
    }
}
