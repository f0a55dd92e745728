package console_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// browser starts Debian's headless chromium; it records dialogs and console
// errors (a script that ran, or one the CSP blocked).
func browser(t *testing.T) (context.Context, *[]string) {
	t.Helper()
	bin := testenv.RequireCommand(t, "chromium")
	// The profile is not a t.TempDir: chromium's helper processes can still
	// be writing into it for a moment after the browser is stopped, which
	// made TempDir's own removal fail the test. It is removed here, retried.
	profile, err := os.MkdirTemp("", "loupe-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			err := os.RemoveAll(profile)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Logf("chromium profile %s not removed: %v", profile, err)
				return
			}
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(profile), chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1400, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	var mu sync.Mutex
	events := &[]string{}
	chromedp.ListenTarget(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			*events = append(*events, "dialog: "+e.Message)
			go chromedp.Run(ctx, page.HandleJavaScriptDialog(false))
		case *runtime.EventExceptionThrown:
			*events = append(*events, "exception: "+e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			*events = append(*events, "console: "+string(e.Type))
		}
	})
	return ctx, events
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var buf []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&buf, 100)); err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("LOUPE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBrowser(t *testing.T) {
	e := startEnv(t, nil)
	ctx, events := browser(t)
	fl := e.fleet
	var text string
	// No token: the sign-in page, status 401.
	if err := chromedp.Run(ctx, chromedp.Navigate(e.base+"/search"), chromedp.Text("h1", &text)); err != nil {
		t.Fatal(err)
	}
	if text != "Sign in" {
		t.Fatalf("without a token: %q", text)
	}
	// Sign in through the form; the overview shows the seeded nodes.
	if err := chromedp.Run(ctx, chromedp.Navigate(e.base+"/login"), chromedp.SendKeys(`input[name=token]`, testToken),
		chromedp.Submit(`input[name=token]`), chromedp.WaitVisible(`#nodes`), chromedp.Text(`#nodes`, &text)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b", "node-c", "v1.3.2"} {
		if !strings.Contains(text, n) {
			t.Errorf("overview nodes: no %q in %q", n, text)
		}
	}
	var rects int
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.querySelectorAll("#chart rect[class^=sev-]").length`, &rects)); err != nil {
		t.Fatal(err)
	}
	if rects == 0 {
		t.Error("the chart has no bar")
	}
	screenshot(t, ctx, "overview")
	// A search by kind and pod returns exactly the seeded rows.
	var hrefs []string
	if err := chromedp.Run(ctx, chromedp.Navigate(e.base+"/search?since=24h&kind=exec_failed&kind=runtime_exec_failed&pod="+fl.DistrolessPod),
		chromedp.WaitVisible(`#count`),
		chromedp.Evaluate(`[...document.querySelectorAll("table.findings a.row")].map(a => a.getAttribute("href"))`, &hrefs)); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range strings.Split(fl.FailedIDs, ",") {
		want["/finding/"+id] = true
	}
	if len(hrefs) != len(want) {
		t.Errorf("search rows %v, want %v", hrefs, want)
	}
	for _, h := range hrefs {
		if !want[h] {
			t.Errorf("unexpected row %s", h)
		}
	}
	screenshot(t, ctx, "search")
	// The shell's detail page shows its ancestor chain.
	var chain []string
	if err := chromedp.Run(ctx, chromedp.Navigate(e.base+"/finding/"+fl.ShellID), chromedp.WaitVisible(`#tree`),
		chromedp.Evaluate(`[...document.querySelectorAll("#tree li > b")].map(b => b.textContent)`, &chain)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(chain, ">"); !strings.HasPrefix(got, strings.Join(fl.ShellChain, ">")+">curl") {
		t.Errorf("process tree %q, want %v then curl", got, fl.ShellChain)
	}
	screenshot(t, ctx, "finding")
	// Hostile argv and names render as text and run nothing.
	for _, p := range []string{"/finding/" + fl.XSSID, "/finding/" + fl.ChildID, "/search?since=&limit=1000", "/timeline?namespace=" + fl.DistrolessNS + "&pod=" + fl.DistrolessPod} {
		if err := chromedp.Run(ctx, chromedp.Navigate(e.base+p), chromedp.WaitReady("footer"), chromedp.Text("main", &text)); err != nil {
			t.Fatal(err)
		}
		var imgs, scripts int
		chromedp.Run(ctx, chromedp.Evaluate(`document.querySelectorAll("main img, main script, main svg[onload]").length`, &imgs),
			chromedp.Evaluate(`document.scripts.length`, &scripts))
		if imgs != 0 || scripts != 0 {
			t.Errorf("%s: %d injected elements, %d scripts", p, imgs, scripts)
		}
	}
	if !strings.Contains(text, "failed → passed") {
		t.Errorf("timeline without the control change")
	}
	if err := chromedp.Run(ctx, chromedp.Navigate(e.base+"/finding/"+fl.XSSID), chromedp.Text("#argv", &text)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, `<script>alert("xss-script")</script>`) {
		t.Errorf("argv not shown as recorded: %q", text)
	}
	screenshot(t, ctx, "timeline")
	time.Sleep(300 * time.Millisecond)
	if len(*events) != 0 {
		t.Errorf("dialogs or console messages: %v", *events)
	}
}
