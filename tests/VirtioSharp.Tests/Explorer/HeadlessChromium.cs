using System.Text.Json;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;

namespace VirtioSharp.Tests.Explorer;

/// <summary>
/// Debian's chromium driven by its chromedriver through Selenium: headless, a fresh profile, no
/// network features, and explicit paths so Selenium Manager never looks for anything to download.
/// A missing browser fails the test that needs it (test.sh installs chromium and chromium-driver).
/// </summary>
internal sealed class HeadlessChromium : IDisposable
{
    public const string Binary = "/usr/bin/chromium";
    public const string Driver = "/usr/bin/chromedriver";
    private readonly string _profile;

    public HeadlessChromium()
    {
        if (!File.Exists(Binary) || !File.Exists(Driver))
            throw new InvalidOperationException($"the explorer tests need Debian's chromium and chromium-driver ({Binary}, {Driver}); ./test.sh installs them");
        // Selenium Manager stays offline even if something asks it for a driver.
        Environment.SetEnvironmentVariable("SE_OFFLINE", "true");
        _profile = Directory.CreateTempSubdirectory("vblk-chromium-").FullName;
        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(Driver)!, Path.GetFileName(Driver));
        service.SuppressInitialDiagnosticInformation = true;
        service.HideCommandPromptWindow = true;
        var options = new ChromeOptions { BinaryLocation = Binary };
        options.AddArguments("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
            $"--user-data-dir={_profile}", "--window-size=1400,1100");
        options.SetLoggingPreference(LogType.Browser, OpenQA.Selenium.LogLevel.All);
        Web = new ChromeDriver(service, options, TimeSpan.FromSeconds(90));
    }

    public ChromeDriver Web { get; }

    public void Open(string file) => Web.Navigate().GoToUrl(new Uri(Path.GetFullPath(file)).AbsoluteUri);

    public object? Script(string js) => ((IJavaScriptExecutor)Web).ExecuteScript(js);

    /// <summary>Messages the page logged at SEVERE level (errors, uncaught exceptions, blocked loads).</summary>
    public List<string> ConsoleErrors() =>
        Web.Manage().Logs.GetLog(LogType.Browser).Where(e => e.Level >= OpenQA.Selenium.LogLevel.Severe).Select(e => e.Message).ToList();

    /// <summary>Every resource the page loaded besides itself (resource timing), and the page's own address.</summary>
    public (List<string> Resources, string Page) Loads()
    {
        var json = (string)Script("return JSON.stringify({ r: performance.getEntriesByType('resource').map(e => e.name), p: performance.getEntriesByType('navigation').map(e => e.name)[0] || location.href });")!;
        using var doc = JsonDocument.Parse(json);
        var resources = doc.RootElement.GetProperty("r").EnumerateArray().Select(e => e.GetString()!).ToList();
        return (resources, doc.RootElement.GetProperty("p").GetString()!);
    }

    public void Screenshot(string path) => Web.GetScreenshot().SaveAsFile(path);

    public void Dispose()
    {
        try
        {
            Web.Quit();
        }
        finally
        {
            Web.Dispose();
            try { Directory.Delete(_profile, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
